/* What the batch and compare pages' charts share: the page's JSON, the API's JSON fetched
   with the page's session, and times shown in the plant's time zone. Every text drawn
   comes through ECharts' canvas (tooltips as rich text, never HTML). */
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('page-data').textContent);
  var clock = new Intl.DateTimeFormat(data.language, {
    timeZone: data.zone, month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    hourCycle: 'h23'
  });
  window.PageCharts = {
    data: data,
    time: function (ms) { return clock.format(new Date(ms)); },
    json: function (url) {
      return fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) {
          if (r.ok) { return r.json(); }
          return r.text().then(function (t) { throw new Error(r.status + ' ' + t); });
        });
    },
    /* The spec band (green) and limit lines of a tag, where it has limits. */
    specs: function (low, high, label) {
      if (low === null && high === null) { return {}; }
      var lines = [];
      if (low !== null) { lines.push({ yAxis: low, name: label }); }
      if (high !== null) { lines.push({ yAxis: high, name: label }); }
      return {
        markArea: {
          silent: true, itemStyle: { color: 'rgba(46, 125, 50, 0.10)' },
          data: [[{ yAxis: low !== null ? low : -1e300 }, { yAxis: high !== null ? high : 1e300 }]]
        },
        markLine: {
          silent: true, symbol: 'none', label: { show: false },
          lineStyle: { color: '#2e7d32', type: 'dashed' }, data: lines
        }
      };
    },
    fail: function (box, err) {
      box.setAttribute('data-status', 'error');
      box.textContent = String(err);
    }
  };
})();
