/* The genealogy graph of the trace page: cytoscape draws it, ELK's layered layout places it
   left to right (upstream on the left) in a web worker, so a graph of thousands of nodes
   never freezes the page. The graph comes as JSON from the page (never from the URL); a
   click on a node goes to the page its server-made link names; hovering one shows what is
   wrong with it (its server-made title). */
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('page-data').textContent);
  var box = document.getElementById('graph');
  var graph = data.graph;
  var SIZE = {
    lot: [176, 60], batch: [150, 48], receipt: [150, 44], shipment: [150, 44], customer: [150, 44]
  };
  var big = graph.nodes.length > 400;
  // A node's box: its kind's, taller when its label wraps to more lines (a batch's gaps;
  // about 6 px a character at the labels' 11 px).
  function size(n) {
    var width = SIZE[n.kind][0];
    var lines = 0;
    n.label.split('\n').forEach(function (line) {
      lines += Math.max(1, Math.ceil(line.length * 6 / (width - 24)));
    });
    return [width, Math.max(SIZE[n.kind][1], 13 * lines + 16)];
  }

  var elements = [];
  graph.nodes.forEach(function (n) {
    var dims = size(n);
    elements.push({
      group: 'nodes',
      data: { id: n.id, label: n.label, href: n.href || '', title: n.title || '',
              w: dims[0], h: dims[1] },
      classes: [n.kind].concat(n.flags).join(' ')
    });
  });
  graph.edges.forEach(function (e) {
    elements.push({
      group: 'edges',
      data: { id: e.id, source: e.source, target: e.target,
              label: e.loop ? (e.label ? e.label + ' · ' : '') + data.labels.loop : e.label },
      classes: e.loop ? 'loop' : ''
    });
  });

  var cy = cytoscape({
    container: box,
    elements: elements,
    layout: { name: 'preset' },
    minZoom: 0.03,
    maxZoom: 3,
    wheelSensitivity: 0.4,
    textureOnViewport: big,
    hideEdgesOnViewport: graph.edges.length > 1500,
    style: [
      { selector: 'node', style: {
        'label': 'data(label)', 'text-wrap': 'wrap', 'text-max-width': 'data(w)',
        'text-valign': 'center', 'text-halign': 'center', 'font-size': 11,
        'width': 'data(w)', 'height': 'data(h)', 'border-width': 2,
        'min-zoomed-font-size': 6 } },
      { selector: 'node.lot', style: {
        'shape': 'round-rectangle', 'background-color': '#e8f0fb', 'border-color': '#3b5b82' } },
      { selector: 'node.batch', style: {
        'shape': 'hexagon', 'background-color': '#eef2e6', 'border-color': '#5b7a2e' } },
      { selector: 'node.receipt', style: {
        'shape': 'tag', 'background-color': '#f3ecfa', 'border-color': '#6b4a8f' } },
      { selector: 'node.shipment', style: {
        'shape': 'rhomboid', 'background-color': '#fdf1e4', 'border-color': '#a0642a' } },
      { selector: 'node.customer', style: {
        'shape': 'ellipse', 'background-color': '#e6f4ef', 'border-color': '#2a7a5f' } },
      { selector: 'node.focus', style: {
        'border-width': 5, 'border-color': '#1f5fa8', 'background-color': '#cfe2fb',
        'font-weight': 'bold' } },
      { selector: 'node.no_origin, node.quantity_note', style: {
        'border-style': 'dashed', 'border-color': '#b3261e', 'border-width': 4 } },
      { selector: 'node.excursion, node.no_readings', style: {
        'border-color': '#b85c00', 'border-width': 4, 'background-color': '#fff1de' } },
      // A gap in a batch's record: a double red border (its reasons are on the node).
      { selector: 'node.no_inputs, node.unbalanced, node.partly_counted, node.never_arrived',
        style: { 'border-style': 'double', 'border-color': '#b3261e', 'border-width': 7 } },
      { selector: 'edge', style: {
        'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'width': 1.5,
        'line-color': '#8a97a8', 'target-arrow-color': '#8a97a8',
        'label': 'data(label)', 'font-size': 10, 'text-background-color': '#ffffff',
        'text-background-opacity': 0.85, 'text-background-padding': 2,
        'min-zoomed-font-size': 7 } },
      { selector: 'edge.loop', style: {
        'line-color': '#b3261e', 'target-arrow-color': '#b3261e', 'line-style': 'dashed',
        'width': 2.5, 'color': '#b3261e' } },
      { selector: 'node:selected', style: { 'overlay-opacity': 0.15 } }
    ]
  });

  cy.on('tap', 'node', function (event) {
    var href = event.target.data('href');
    // Only a path of this site, as the server made it.
    if (href && href.charAt(0) === '/' && href.charAt(1) !== '/') {
      window.location.assign(href);
    }
  });

  // The tooltip: what is wrong with the node, in full (the canvas has no title of its own).
  cy.on('mouseover', 'node', function (event) {
    box.title = event.target.data('title');
    box.style.cursor = event.target.data('href') ? 'pointer' : '';
  });
  cy.on('mouseout', 'node', function () { box.title = ''; box.style.cursor = ''; });

  var started = performance.now();
  var elk = new ELK({ workerUrl: box.getAttribute('data-worker') });
  elk.layout({
    id: 'root',
    layoutOptions: Object.assign({
      'elk.algorithm': 'layered',
      'elk.direction': 'RIGHT',
      'elk.spacing.nodeNode': '18',
      'elk.layered.spacing.nodeNodeBetweenLayers': '70',
      'elk.layered.cycleBreaking.strategy': 'DEPTH_FIRST',
      'elk.separateConnectedComponents': 'false',
      // Only the nodes' places are used (cytoscape draws the edges): no orthogonal routing.
      'elk.edgeRouting': 'POLYLINE'
    }, big ? {
      // A big graph: fewer crossing-minimisation sweeps and the simplest node placement,
      // seconds instead of tens of seconds for a thousand nodes.
      'elk.layered.thoroughness': '1',
      'elk.layered.nodePlacement.strategy': 'SIMPLE',
      'elk.layered.crossingMinimization.greedySwitch.type': 'OFF'
    } : {}),
    children: graph.nodes.map(function (n) {
      var dims = size(n);
      return { id: n.id, width: dims[0], height: dims[1] };
    }),
    edges: graph.edges.map(function (e) {
      return { id: e.id, sources: [e.source], targets: [e.target] };
    })
  }).then(function (laid) {
    cy.batch(function () {
      laid.children.forEach(function (c) {
        cy.getElementById(c.id).position({ x: c.x + c.width / 2, y: c.y + c.height / 2 });
      });
    });
    cy.fit(undefined, 24);
    box.setAttribute('data-layout-ms', String(Math.round(performance.now() - started)));
    box.setAttribute('data-status', 'ready');
    printable();
  }).catch(function (err) {
    box.setAttribute('data-status', 'error');
    box.textContent = 'The layout failed: ' + err;
  });

  function printable() {
    var img = document.getElementById('graph-print');
    if (img) {
      img.src = cy.png({ full: true, scale: big ? 1 : 2, bg: '#ffffff', maxWidth: 6000 });
    }
  }
  window.addEventListener('beforeprint', printable);
  var button = document.getElementById('print');
  if (button) {
    button.addEventListener('click', function () { printable(); window.print(); });
  }
  window.traceGraph = cy; /* for the browser tests and the curious */
})();
