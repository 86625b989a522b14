/* suanli console: chart glue, no framework. Reads chart data from
   <script type="application/json"> blocks and draws them with ECharts (vendor/echarts.min.js).
   The console's Content Security Policy allows no inline script: every script lives here.
   Every part checks that its element (and ECharts) is there, so it is safe on any page. */
(function () {
  "use strict";

  var charts = [];
  var still = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function readJSON(id) {
    var el = document.getElementById(id);
    if (!el) return null;
    try {
      return JSON.parse(el.textContent || "null");
    } catch (e) {
      return null;
    }
  }

  function escapeHTML(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function percent(v) {
    return v === null || v === undefined || v < 0 ? "—" : (v * 100).toFixed(1) + "%";
  }

  function start(el) {
    var chart = window.echarts.init(el, null, { renderer: "canvas" });
    charts.push(chart);
    return chart;
  }

  /* --- the network map ------------------------------------------------------------------ */

  var SHAPES = { east: "circle", west: "triangle" };
  var UTIL_COLOURS = ["#dbeafe", "#60a5fa", "#1d4ed8", "#7c2d12"];
  var CARBON_COLOURS = ["#15803d", "#facc15", "#ea580c", "#7f1d1d"];

  function visualMap(mode, data, narrow) {
    var carbonMax = 0.1;
    data.points.forEach(function (p) {
      if (p.carbon > carbonMax) carbonMax = p.carbon;
    });
    var util = mode !== "carbon";
    return {
      type: "continuous",
      dimension: util ? 2 : 3,
      seriesIndex: [0, 1, 2],
      min: 0,
      max: util ? 1 : Math.ceil(carbonMax * 10) / 10,
      calculable: false,
      orient: narrow ? "horizontal" : "vertical",
      left: narrow ? "center" : 8,
      bottom: 4,
      itemHeight: narrow ? 120 : 90,
      itemWidth: 12,
      text: [util ? data.labels.util : data.labels.carbon, ""],
      textStyle: { color: "#1d2733", fontSize: 11 },
      formatter: function (v) {
        return util ? Math.round(v * 100) + "%" : Number(v).toFixed(2);
      },
      inRange: { color: util ? UTIL_COLOURS : CARBON_COLOURS },
      outOfRange: { color: "#b0b7c0" }
    };
  }

  function mapOption(data, mode, narrow) {
    var L = data.labels;
    var maxDevices = 1;
    data.points.forEach(function (p) {
      if (p.devices > maxDevices) maxDevices = p.devices;
    });
    function item(p) {
      var base = p.kind === "hub" ? 18 : p.kind === "cluster" ? 10 : 8;
      return {
        name: p.name,
        value: [p.lon, p.lat, p.util === null ? -1 : p.util, p.carbon],
        symbol: SHAPES[p.ew] || "circle",
        symbolSize: base + (p.devices ? 22 * Math.sqrt(p.devices / maxDevices) : 0),
        point: p
      };
    }
    function series(kind, style, z) {
      return {
        name: L[kind],
        type: "scatter",
        coordinateSystem: "geo",
        z: z,
        data: data.points.filter(function (p) { return p.kind === kind; }).map(item),
        itemStyle: style,
        emphasis: { scale: 1.2 }
      };
    }
    var maxCount = 1;
    data.flows.forEach(function (f) {
      if (f.count > maxCount) maxCount = f.count;
    });
    return {
      animation: !still,
      tooltip: {
        trigger: "item",
        confine: true,
        formatter: function (params) {
          var d = params.data || {};
          if (params.seriesType === "lines") {
            return escapeHTML(d.from) + " → " + escapeHTML(d.to) + "<br>" +
              escapeHTML(L.tasks) + ": " + d.value;
          }
          var p = d.point;
          if (!p) return "";
          var lines = [
            "<strong>" + escapeHTML(p.name) + "</strong> · " + escapeHTML(params.seriesName) +
              " · " + escapeHTML(L[p.ew]),
            escapeHTML(L.devices) + ": " + p.devices,
            escapeHTML(L.util) + ": " + percent(p.util),
            escapeHTML(L.carbon) + ": " + Number(p.carbon).toFixed(3)
          ];
          if (p.racks) lines.push(escapeHTML(L.racks) + ": " + p.racks + " (" + escapeHTML(p.racks_basis) + ")");
          return lines.join("<br>");
        }
      },
      legend: {
        type: "scroll",
        top: 0,
        left: 0,
        right: 0,
        data: [L.hub, L.cluster, L.site, L.flows],
        textStyle: { fontSize: 12 }
      },
      geo: {
        map: "china",
        roam: true,
        center: [104.5, 36],
        zoom: 1.15,
        top: 36,
        bottom: narrow ? 56 : 10,
        label: { show: false },
        itemStyle: { areaColor: "#e9eef4", borderColor: "#9aa5b1", borderWidth: 0.6 },
        emphasis: { label: { show: false }, itemStyle: { areaColor: "#dbe5ef" } },
        select: { disabled: true }
      },
      visualMap: visualMap(mode, data, narrow),
      series: [
        series("hub", { opacity: 0.45, borderColor: "#102a43", borderWidth: 1.5 }, 2),
        series("cluster", { opacity: 0.95, borderColor: "#fff", borderWidth: 1 }, 3),
        series("site", { opacity: 0.95, borderColor: "#1d2733", borderWidth: 1 }, 4),
        {
          name: L.flows,
          type: "lines",
          coordinateSystem: "geo",
          z: 5,
          symbol: ["none", "arrow"],
          symbolSize: 7,
          effect: { show: !still, period: 5, trailLength: 0.2, symbolSize: 4 },
          lineStyle: { color: "#0b5cad", opacity: 0.5, curveness: 0.2 },
          data: data.flows.map(function (f) {
            return {
              from: f.from,
              to: f.to,
              value: f.count,
              coords: f.coords,
              lineStyle: { width: 1 + 3 * f.count / maxCount }
            };
          })
        }
      ]
    };
  }

  function mode() {
    var checked = document.querySelector('input[name="colour"]:checked');
    return checked ? checked.value : "util";
  }

  function drawMap() {
    var el = document.getElementById("network-map");
    if (!el || !window.echarts) return;
    var data = readJSON(el.getAttribute("data-source") || "overview-data");
    if (!data || !data.points) return;
    var url = el.getAttribute("data-geo");
    fetch(url, { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("map " + r.status);
        return r.json();
      })
      .then(function (geo) {
        if (!window.echarts.getMap("china")) window.echarts.registerMap("china", geo);
        var chart = start(el);
        var narrow = el.clientWidth < 520;
        chart.setOption(mapOption(data, mode(), narrow));
        var inputs = document.querySelectorAll('input[name="colour"]');
        Array.prototype.forEach.call(inputs, function (input) {
          input.addEventListener("change", function () {
            chart.setOption({ visualMap: visualMap(mode(), data, narrow) }, { replaceMerge: ["visualMap"] });
          });
        });
      })
      .catch(function () {
        el.classList.add("chart-failed");
        el.removeAttribute("role");
      });
  }

  /* --- the sites page: utilisation over the last 24 hours ------------------------------- */

  function drawSites() {
    var data = readJSON("sites-data");
    if (!data || !data.sites || !window.echarts) return;
    data.sites.forEach(function (site) {
      var el = document.getElementById(site.id);
      if (!el) return;
      var values = site.values.map(function (v) { return Math.round(v * 1000) / 10; });
      var top = Math.max.apply(null, values.concat([100]));
      start(el).setOption({
        animation: !still,
        grid: { left: 44, right: 12, top: 16, bottom: 28 },
        tooltip: { trigger: "axis", valueFormatter: function (v) { return v + "%"; } },
        xAxis: { type: "category", data: data.hours, boundaryGap: false,
                 axisLabel: { interval: 5, fontSize: 11 } },
        yAxis: { type: "value", min: 0, max: top, axisLabel: { formatter: "{value}%", fontSize: 11 } },
        series: [{
          name: data.label,
          type: "line",
          data: values,
          showSymbol: false,
          lineStyle: { color: "#0b5cad", width: 2 },
          areaStyle: { color: "rgba(11, 92, 173, 0.15)" }
        }]
      });
    });
  }

  /* --- a digital-twin run: policies compared, busy devices over time ------------------ */

  function drawTwin() {
    var data = readJSON("twin-data");
    var barsEl = document.getElementById("twin-chart");
    var busyEl = document.getElementById("twin-busy");
    if (!data || !barsEl || !busyEl || !window.echarts) return;
    start(barsEl).setOption({
      animation: !still,
      tooltip: { trigger: "axis", valueFormatter: function (v) { return v + "%"; } },
      legend: { top: 0 },
      grid: { left: 8, right: 8, bottom: 8, top: 40, containLabel: true },
      xAxis: { type: "category", data: data.measures },
      yAxis: { type: "value", max: 100, axisLabel: { formatter: "{value}%" } },
      series: data.bars.map(function (b) { return { name: b.name, type: "bar", data: b.values }; })
    });
    start(busyEl).setOption({
      animation: !still,
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 8, right: 24, bottom: 28, top: 40, containLabel: true },
      xAxis: { type: "value", name: data.hours, nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "value" },
      series: data.lines.map(function (l) {
        return { name: l.name, type: "line", showSymbol: false, step: "end", data: l.data };
      })
    });
  }

  /* --- load forecasts: actual vs forecast, the interval drawn as a band ------------------- */

  var HOUR_MS = 3600 * 1000;
  var ACTUAL_COLOUR = "#0b5cad";
  var MEAN_COLOUR = "#a15c00";
  var BAND_COLOUR = "rgba(161, 92, 0, 0.22)";

  function cstHour(ms) {  /* an hour's start in China Standard Time: "03-02 08:00" */
    var d = new Date(ms + 8 * HOUR_MS);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) + " " + two(d.getUTCHours()) + ":00";
  }

  function bandShape(params, api) {
    /* the whole interval as one polygon, drawn once (for the first hour): along the lower
       bounds, then back along the upper ones */
    if (params.dataIndexInside !== 0) return null;
    var lower = [];
    var upper = [];
    for (var i = 0; i < params.dataInsideLength; i++) {
      lower.push(api.coord([api.value(0, i), api.value(1, i)]));
      upper.unshift(api.coord([api.value(0, i), api.value(2, i)]));
    }
    return {
      type: "polygon",
      shape: { points: lower.concat(upper) },
      style: { fill: BAND_COLOUR, stroke: "none" }
    };
  }

  function forecastOption(data, narrow) {
    var L = data.labels;
    var row = data.site;
    var origin = Date.parse(data.start);  /* the current hour: x = 0 */
    var actual = row.actual.map(function (a) {
      return [Math.round((Date.parse(a.hour) - origin) / HOUR_MS), a.value];
    });
    var lead = row.first_h || 0;  /* the forecast's first hour from now (observations may lag) */
    var mean = row.mean.map(function (v, k) { return [lead + k, v]; });
    var band = row.mean.map(function (v, k) { return [lead + k, row.lower[k], row.upper[k]]; });
    var step = narrow ? 24 : 12;
    var first = actual.length ? actual[0][0] : 0;
    var last = mean.length ? lead + mean.length - 1 : 0;  /* no forecast: the axis ends at now */
    var places = data.decimals == null ? 2 : data.decimals;
    function number(v) { return Number(v).toFixed(places) + " " + L.devices; }
    return {
      animation: !still,
      legend: {
        type: "scroll",
        top: 0,
        left: 0,
        right: 0,
        data: mean.length ? [L.actual, L.mean, L.interval] : [L.actual]
      },
      /* ECharts 6 keeps the axes' labels and names inside the chart (grid.outerBoundsMode) */
      grid: { left: 8, right: 20, top: 56, bottom: 8 },
      tooltip: {
        trigger: "axis",
        confine: true,
        formatter: function (items) {
          if (!items.length) return "";
          var x = items[0].value[0];
          var lines = ["<strong>" + escapeHTML(cstHour(origin + x * HOUR_MS)) + "</strong> (" +
            (x >= 0 ? "+" : "") + x + " h)"];
          items.forEach(function (item) {
            var v = item.value;
            var text = item.seriesId === "interval"
              ? Number(v[1]).toFixed(places) + " – " + number(v[2])
              : number(v[1]);
            lines.push(item.marker + escapeHTML(item.seriesName) + ": " + escapeHTML(text));
          });
          return lines.join("<br>");
        }
      },
      xAxis: {
        type: "value",
        name: L.x_axis,
        nameLocation: "middle",
        nameGap: 30,
        min: Math.floor(first / step) * step,
        max: last,
        interval: step,
        axisLabel: {
          showMaxLabel: last % step === 0,
          formatter: function (v) { return (v > 0 ? "+" : "") + v; }
        },
        splitLine: { show: true, lineStyle: { color: "#eef1f5" } }
      },
      yAxis: {
        type: "value",
        min: 0,
        minInterval: data.integer === false ? 0 : 1,
        name: L.y_axis,
        nameLocation: "middle",
        nameGap: 40
      },
      series: [
        {
          id: "interval",
          name: L.interval,
          type: "custom",
          renderItem: bandShape,
          encode: { x: 0, y: [1, 2] },
          data: band,
          itemStyle: { color: BAND_COLOUR },
          z: 1
        },
        {
          id: "actual",
          name: L.actual,
          type: "line",
          data: actual,
          showSymbol: false,
          lineStyle: { color: ACTUAL_COLOUR, width: 2 },
          itemStyle: { color: ACTUAL_COLOUR },
          z: 3,
          markLine: {
            silent: true,
            symbol: "none",
            lineStyle: { color: "#5b6775", type: "dashed", width: 1 },
            label: { formatter: L.now, position: "end", color: "#1d2733" },
            data: [{ name: L.now, xAxis: 0 }]
          }
        },
        {
          id: "mean",
          name: L.mean,
          type: "line",
          data: mean,
          showSymbol: false,
          lineStyle: { color: MEAN_COLOUR, width: 2, type: "dashed" },
          itemStyle: { color: MEAN_COLOUR },
          z: 4
        }
      ]
    };
  }

  function drawForecast() {
    /* the site's load, and its province's carbon intensity where it is observed */
    [["forecast-data", "forecast-chart"], ["carbon-data", "carbon-chart"]].forEach(function (ids) {
      var data = readJSON(ids[0]);
      var el = document.getElementById(ids[1]);
      if (!data || !data.site || !el || !window.echarts) return;
      start(el).setOption(forecastOption(data, el.clientWidth < 520));
    });
  }

  var pending = null;
  window.addEventListener("resize", function () {
    if (pending) window.clearTimeout(pending);
    pending = window.setTimeout(function () {
      charts.forEach(function (c) {
        if (!c.isDisposed()) c.resize();
      });
    }, 120);
  });

  function init() {
    drawMap();
    drawSites();
    drawTwin();
    drawForecast();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
