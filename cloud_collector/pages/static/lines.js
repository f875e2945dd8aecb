/* The lines and edges page follows the fleet: every few seconds it asks GET /api/v1/edges
   (with the page's session) and redraws the edges as templates/lines.html draws them, in
   the order of lines_page.attention. Every text an edge sent goes in through textContent,
   never as HTML. A failed poll leaves the last figures and says since when they stand. */
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('page-data').textContent);
  var L = data.labels;
  var fleet = document.getElementById('fleet');
  var updated = document.getElementById('fleet-updated');
  if (!fleet) { return; }
  var polls = 0;
  var depths = {};  // edge -> outbox depth at the previous poll: a rise is shown as growing

  var parts = new Intl.DateTimeFormat('en-CA', {
    timeZone: data.zone, year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23'
  });
  /* A moment in the plant's time zone, as lines_page's `clock` writes it. */
  function clock(text) {
    if (!text) { return ''; }
    var p = {};
    parts.formatToParts(new Date(text)).forEach(function (x) { p[x.type] = x.value; });
    return p.year + '-' + p.month + '-' + p.day + ' ' + p.hour + ':' + p.minute + ':' + p.second;
  }
  /* lines_page.duration: the two largest units. */
  function span(seconds) {
    if (seconds === null || seconds === undefined) { return ''; }
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) { return s + ' ' + L.s; }
    var m = Math.floor(s / 60), h = Math.floor(s / 3600), d = Math.floor(s / 86400);
    if (s < 3600) { return m + ' ' + L.min; }
    if (s < 86400) { return h + ' ' + L.h + ' ' + (m % 60) + ' ' + L.min; }
    return d + ' ' + L.d + ' ' + (h % 24) + ' ' + L.h;
  }
  /* render.quantity: no trailing zeros, thousands grouped, its unit. */
  function quantity(value, unit) {
    if (value === null || value === undefined) { return '?'; }
    var text = Number(value).toLocaleString('en-US', { maximumFractionDigits: 3 });
    return unit ? text + ' ' + unit : text;
  }

  var BACKLOG_S = 60;  // lines_page.BACKLOG_S
  function trouble(e) {
    var s = e.status;
    if (e.refused && !s) { return true; }
    if (!s) { return false; }
    return (s.alarms && s.alarms.length > 0) || (s.outbox_oldest_age_s || 0) > BACKLOG_S ||
      !!s.outbox_dropped || !!s.quarantined ||
      (s.devices || []).some(function (d) { return !d.connected; });
  }
  /* lines_page.attention: offline, silent, in trouble, unknown, fine; then the oldest
     outbox record, the deepest outbox, the edge id. */
  var ATTENTION = { offline: 0, silent: 1, unknown: 3, online: 4 };
  function key(e) {
    var rank = ATTENTION[e.state];
    if ((e.state === 'online' || e.state === 'unknown') && trouble(e)) { rank = 2; }
    var s = e.status || {};
    return [rank, -(s.outbox_oldest_age_s || 0), -(s.outbox_depth || 0), e.edge_id];
  }
  function byAttention(a, b) {
    var x = key(a), y = key(b);
    for (var i = 0; i < x.length; i++) {
      if (x[i] < y[i]) { return -1; }
      if (x[i] > y[i]) { return 1; }
    }
    return 0;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== '') {
        if (k === 'text') { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
      }
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) { return; }
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fact(label, strong, after, attrs) {
    return el('li', attrs || {}, [label + ' ', el('strong', { text: strong }), after || null]);
  }

  function edgeView(e) {
    var s = e.status;
    var since = e.state_since ? L.since + ' ' + clock(e.state_since)
      : (e.state !== 'unknown' ? L.since_first_seen : '');
    var article = el('article', {
      'class': 'edge state-' + e.state + (trouble(e) ? ' trouble' : ''),
      'data-edge': e.edge_id, 'data-state': e.state, 'data-testid': 'edge'
    }, [el('header', {}, [
      el('h2', { text: e.edge_id }), ' ',
      el('span', { 'class': 'badge', text: L[e.state] }), ' ',
      el('span', { 'class': 'since', text: since }),
      e.registered ? null : el('span', { 'class': 'bad', text: L.not_registered })
    ])]);
    var facts = el('ul', { 'class': 'facts' });
    if (e.received_at) {
      facts.appendChild(fact(L.last_status, span(e.age_s),
        el('span', { text: ' ' + L.ago + ' ' }, [el('span', { 'class': 'muted', text: '(' + clock(e.received_at) + ')' })])));
    }
    if (s) {
      if (s.version) { facts.appendChild(fact(L.version, s.version)); }
      if (s.outbox_depth !== null && s.outbox_depth !== undefined) {
        var growing = depths[e.edge_id] !== undefined && s.outbox_depth > depths[e.edge_id];
        facts.appendChild(el('li', { 'data-testid': 'outbox', 'class': growing ? 'growing' : '' }, [
          L.outbox + ' ', el('strong', { text: String(s.outbox_depth) }), ' ' + L.records,
          s.outbox_oldest_age_s ? ', ' + L.oldest + ' ' : null,
          s.outbox_oldest_age_s ? el('strong', { text: span(s.outbox_oldest_age_s) }) : null,
          growing ? el('span', { 'class': 'bad', text: ' ↑ ' + L.growing }) : null
        ]));
      }
      if (s.outbox_dropped) { facts.appendChild(fact(L.dropped, String(s.outbox_dropped), null, { 'class': 'bad' })); }
      if (s.quarantined) { facts.appendChild(fact(L.quarantined, String(s.quarantined), null, { 'class': 'bad' })); }
      facts.appendChild(fact(L.last_ack, clock(s.last_ack_at) || L.never));
    }
    if (e.refused) {
      facts.appendChild(fact(L.refused, String(e.refused),
        e.last_refused_at ? ' (' + clock(e.last_refused_at) + ')' : null,
        { 'class': 'bad', title: e.last_refused_reason || '' }));
    }
    article.appendChild(facts);
    if (s && s.alarms && s.alarms.length) {
      article.appendChild(el('div', { 'class': 'alarms', role: 'alert' }, [
        el('strong', { text: L.alarms }),
        el('ul', {}, s.alarms.map(function (a) { return el('li', { text: a }); }))
      ]));
    }
    if (s) {
      article.appendChild(el('div', { 'class': 'edge-tables' }, [linesTable(s), devicesTable(s)]));
    }
    return article;
  }

  function table(cls, testid, heads, rows, empty) {
    return el('table', { 'class': cls, 'data-testid': testid }, [
      el('thead', {}, [el('tr', {}, heads.map(function (h) {
        return el('th', { 'class': h[1] || '', text: h[0] });
      }))]),
      el('tbody', {}, rows.length ? rows
        : [el('tr', {}, [el('td', { colspan: String(heads.length), 'class': 'muted', text: empty })])])
    ]);
  }
  function linesTable(s) {
    return table('lines', 'lines', [[L.line], [L.active_batch], [L.started]],
      (s.lines || []).map(function (l) {
        var batch = l.batch
          ? el('a', { href: '/batches/' + encodeURIComponent(l.batch), 'data-testid': 'batch-link', text: l.batch })
          : el('span', { 'class': 'muted', text: L.idle });
        return el('tr', {}, [el('td', { text: l.line }), el('td', {}, [batch]),
          el('td', { text: clock(l.batch_started_at) })]);
      }), L.no_lines);
  }
  function devicesTable(s) {
    return table('devices', 'devices',
      [[L.device], [L.station], [L.connection], [L.last_read], [L.failures, 'num'], [L.last_error], [L.last_values]],
      (s.devices || []).map(function (d) {
        var connection = d.connected ? el('td', { text: L.connected }) : el('td', {}, [
          el('span', { 'class': 'bad', text: L.disconnected }),
          d.offline_since ? ' ' + L.since + ' ' + clock(d.offline_since) : null
        ]);
        var values = el('ul', { 'class': 'values' }, (d.values || []).map(function (v) {
          return el('li', { 'class': v.quality === 'good' ? '' : 'bad', title: clock(v.time),
            text: v.tag + ' = ' + quantity(v.value, v.unit) + (v.quality !== 'good' ? ' (' + v.quality + ')' : '') });
        }));
        return el('tr', { 'class': d.connected ? '' : 'down' }, [
          el('td', { text: d.device }), el('td', { text: d.station }), connection,
          el('td', { text: clock(d.last_read_at) }), el('td', { 'class': 'num', text: String(d.failures || 0) }),
          el('td', { 'class': 'device-error', text: d.last_error || '' }), el('td', {}, [values])
        ]);
      }), L.no_devices);
  }

  function draw(answer) {
    var edges = answer.edges.slice().sort(byAttention);
    var shown = document.createDocumentFragment();
    edges.forEach(function (e) { shown.appendChild(edgeView(e)); });
    if (!edges.length) { shown.appendChild(el('p', { 'class': 'muted', text: L.no_edges })); }
    fleet.replaceChildren(shown);
    ['offline', 'silent', 'unknown', 'online'].forEach(function (state) {
      var count = document.querySelector('[data-count="' + state + '"]');
      var n = edges.filter(function (e) { return e.state === state; }).length;
      if (count) {
        count.textContent = String(n);
        count.parentNode.className = state !== 'online' && n ? 'warn' : '';
      }
    });
    depths = {};
    edges.forEach(function (e) { if (e.status) { depths[e.edge_id] = e.status.outbox_depth; } });
    polls += 1;
    fleet.setAttribute('data-polls', String(polls));
    fleet.setAttribute('data-status', 'ready');
    updated.textContent = L.updated + ' ' + clock(new Date().toISOString());
    updated.className = '';
  }

  var last = clock(new Date().toISOString());
  function poll() {
    fetch('/api/v1/edges', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (r.ok) { return r.json(); }
        throw new Error(String(r.status));
      })
      .then(function (answer) { draw(answer); last = clock(new Date().toISOString()); })
      .catch(function () {
        fleet.setAttribute('data-status', 'stale');
        updated.textContent = L.refresh_failed + ' ' + last;
        updated.className = 'bad';
      })
      .then(function () { window.setTimeout(poll, data.refresh_s * 1000); });
  }
  document.querySelectorAll('#fleet [data-testid=outbox] strong').forEach(function (n) {
    var edge = n.closest('[data-edge]').getAttribute('data-edge');
    depths[edge] = Number(n.textContent);
  });
  window.setTimeout(poll, data.refresh_s * 1000);
})();
