/* One chart per tag of the batch: the mean of each bucket, its min and max, the tag's spec
   band, and the buckets that left it in red. The buckets are the API's (GET
   /api/v1/batches/{id}/parameters?points=N; the page chose N so that a large batch is
   drawn from its per-minute rollups). */
(function () {
  'use strict';
  var P = window.PageCharts;
  var chart = P.data.chart;
  var labels = P.data.labels;
  var box = document.getElementById('charts');
  if (!box || chart.points === 0) { return; }
  var url = '/api/v1/batches/' + encodeURIComponent(chart.batch) + '/parameters?points=' + chart.points;
  P.json(url).then(function (answer) {
    answer.series.forEach(function (s) {
      var spec = chart.tags.filter(function (t) {
        return t.device === s.device && t.tag === s.tag;
      })[0] || { low: null, high: null, unit: null };
      var figure = document.createElement('figure');
      var caption = document.createElement('figcaption');
      caption.textContent = s.device + '/' + s.tag + (spec.unit ? ' (' + spec.unit + ')' : '');
      var div = document.createElement('div');
      div.className = 'chart';
      div.setAttribute('data-tag', s.device + '/' + s.tag);
      figure.appendChild(caption);
      figure.appendChild(div);
      box.appendChild(figure);
      var t = function (p) { return Date.parse(p.time); };
      var out = s.points.filter(function (p) {
        return (spec.high !== null && p.max !== null && p.max > spec.high) ||
               (spec.low !== null && p.min !== null && p.min < spec.low);
      });
      var mean = Object.assign({
        name: labels.mean, type: 'line', showSymbol: false, sampling: 'lttb',
        lineStyle: { width: 1.5, color: '#1f5fa8' }, itemStyle: { color: '#1f5fa8' },
        data: s.points.map(function (p) { return [t(p), p.mean]; })
      }, P.specs(spec.low, spec.high, labels.spec));
      var instance = echarts.init(div, null, { renderer: 'canvas' });
      instance.setOption({
        animation: false,
        grid: { left: 56, right: 16, top: 16, bottom: 44 },
        xAxis: { type: 'time', axisLabel: { formatter: P.time, hideOverlap: true } },
        yAxis: {
          type: 'value', scale: true,
          min: function (v) { return spec.low !== null ? Math.min(v.min, spec.low) : v.min; },
          max: function (v) { return spec.high !== null ? Math.max(v.max, spec.high) : v.max; }
        },
        tooltip: { trigger: 'axis', renderMode: 'richText' },
        dataZoom: [{ type: 'inside' }, { type: 'slider', height: 14, bottom: 4 }],
        series: [
          mean,
          { name: labels.range, type: 'line', showSymbol: false, sampling: 'lttb',
            lineStyle: { width: 0.6, color: '#9fb3c8' }, itemStyle: { color: '#9fb3c8' },
            data: s.points.map(function (p) { return [t(p), p.min]; }) },
          { name: labels.range, type: 'line', showSymbol: false, sampling: 'lttb',
            lineStyle: { width: 0.6, color: '#9fb3c8' }, itemStyle: { color: '#9fb3c8' },
            data: s.points.map(function (p) { return [t(p), p.max]; }) },
          { name: labels.excursion, type: 'scatter', symbolSize: 6, itemStyle: { color: '#b3261e' },
            data: out.map(function (p) {
              return [t(p), spec.high !== null && p.max > spec.high ? p.max : p.min];
            }) }
        ]
      });
      window.addEventListener('resize', function () { instance.resize(); });
    });
    box.setAttribute('data-charts', String(answer.series.length));
    box.setAttribute('data-status', 'ready');
  }).catch(function (err) { P.fail(box, err); });
})();
