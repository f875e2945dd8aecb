/* One tag of several batches on one chart, each batch's time counted from its own start
   (its start event, else its first reading), so that their runs line up. */
(function () {
  'use strict';
  var P = window.PageCharts;
  var chart = P.data.chart;
  var labels = P.data.labels;
  var box = document.getElementById('compare');
  Promise.all(chart.batches.map(function (b) {
    return P.json('/api/v1/batches/' + encodeURIComponent(b.batch) + '/parameters?points=' + b.points);
  })).then(function (answers) {
    var series = [];
    var spec = { low: null, high: null };
    answers.forEach(function (answer, i) {
      var s = answer.series.filter(function (x) {
        return x.device === chart.device && x.tag === chart.tag;
      })[0];
      var summary = answer.tags.filter(function (x) {
        return x.device === chart.device && x.tag === chart.tag;
      })[0];
      if (summary && spec.low === null && spec.high === null) {
        spec = { low: summary.low, high: summary.high };
      }
      if (!s || s.points.length === 0) { return; }
      var start = chart.batches[i].started ? Date.parse(chart.batches[i].started)
                                           : Date.parse(s.points[0].time);
      series.push({
        name: chart.batches[i].batch, type: 'line', showSymbol: false, sampling: 'lttb',
        data: s.points.map(function (p) { return [(Date.parse(p.time) - start) / 60000, p.mean]; })
      });
    });
    if (series.length) { Object.assign(series[0], P.specs(spec.low, spec.high, labels.spec)); }
    var instance = echarts.init(box, null, { renderer: 'canvas' });
    instance.setOption({
      animation: false,
      legend: { type: 'scroll', top: 0 },
      grid: { left: 56, right: 24, top: 36, bottom: 56 },
      xAxis: { type: 'value', name: labels.minutes, nameLocation: 'middle', nameGap: 28 },
      yAxis: {
        type: 'value', scale: true,
        min: function (v) { return spec.low !== null ? Math.min(v.min, spec.low) : v.min; },
        max: function (v) { return spec.high !== null ? Math.max(v.max, spec.high) : v.max; }
      },
      tooltip: { trigger: 'axis', renderMode: 'richText' },
      dataZoom: [{ type: 'inside' }, { type: 'slider', height: 14, bottom: 4 }],
      series: series
    });
    window.addEventListener('resize', function () { instance.resize(); });
    box.setAttribute('data-series', String(series.length));
    box.setAttribute('data-status', 'ready');
  }).catch(function (err) { P.fail(box, err); });
})();
