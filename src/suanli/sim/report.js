/* The twin report's charts (suanli/sim/report.py writes the page and inlines this file).
 * Reads the chart data (#report-data) and the China outline (#china-geo), both JSON, and draws
 * every chart with the inlined Apache ECharts, SVG renderer. Nothing is fetched. Policies keep
 * one colour, dash and marker in every chart, so that overlapping lines stay apart. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var COLOURS = ["#0b5cad", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3d405b", "#8c564b",
                 "#17becf"];
  var DASHES = ["solid", "dashed", "dotted", [10, 4, 2, 4], [2, 6], [14, 6]];
  var SYMBOLS = ["circle", "rect", "triangle", "diamond", "pin", "roundRect", "arrow",
                 "emptyCircle"];
  var MARKERS_PER_LINE = 8;
  var EAST = "#1565c0";
  var WEST = "#2e7d32";
  var unit = data.time_unit === "d" ? "days 天" : "hours 小时";
  var timeName = "Time since trace start 距轨迹开始 (" + unit + ")";
  var charts = [];

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function number(value, digits) {
    return Number(value).toLocaleString("en-US", {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits
    });
  }

  function compact(value) {
    var a = Math.abs(value);
    if (a >= 1e9) return number(value / 1e9, 1) + "G";
    if (a >= 1e6) return number(value / 1e6, 1) + "M";
    if (a >= 1e4) return number(value / 1e3, 0) + "k";
    return number(value, a < 10 && value % 1 ? 1 : 0);
  }

  function percent(share) {
    var p = share * 100;
    return number(p, p !== 0 && Math.abs(p) < 10 && p % 1 ? 1 : 0) + "%";
  }

  function start(id) {
    var el = document.getElementById(id);
    var chart = window.echarts.init(el, null, { renderer: "svg" });
    charts.push(chart);
    return chart;
  }

  function policyStyle(n) {
    return {
      colour: COLOURS[n % COLOURS.length],
      dash: DASHES[n % DASHES.length],
      symbol: SYMBOLS[n % SYMBOLS.length]
    };
  }

  function noData(chart) {
    chart.setOption({
      title: {
        text: "No data in this run's timeline\n本次运行的时间线中无此数据",
        left: "center",
        top: "middle",
        textStyle: { fontSize: 13, color: "#52606d", fontWeight: "normal" }
      }
    });
  }

  /* one line per policy over time: format(v) shows a value with its unit */
  function timeChart(id, key, yName, format) {
    var chart = start(id);
    var series = [];
    data.policies.forEach(function (policy, n) {
      var line = (data.series[policy] || {})[key];
      if (!line) return; // an older timeline without this series
      var style = policyStyle(n);
      var every = Math.max(1, Math.floor(line.length / MARKERS_PER_LINE));
      var offset = Math.floor(every * n / Math.max(1, data.policies.length));
      series.push({
        name: policy,
        type: "line",
        data: line,
        step: "end", // a tick's value holds until the next tick (ticks are skipped when idle)
        showSymbol: true,
        symbol: function (value, params) {
          var i = params.dataIndex;
          return i === line.length - 1 || (i + offset) % every === 0 ? style.symbol : "none";
        },
        symbolSize: 8,
        color: style.colour,
        lineStyle: { width: 2, type: style.dash, color: style.colour },
        itemStyle: { color: style.colour },
        emphasis: { focus: "series" }
      });
    });
    if (!series.length) {
      noData(chart);
      return;
    }
    chart.setOption({
      animation: false,
      color: COLOURS,
      legend: { type: "scroll", top: 0, left: 0, right: 0, itemWidth: 30 },
      grid: { left: 8, right: 24, top: 64, bottom: 64, containLabel: true },
      tooltip: {
        trigger: "axis",
        confine: true,
        formatter: function (items) {
          if (!items.length) return "";
          var head = "t = " + number(items[0].value[0], 2) + " " + unit;
          return [head].concat(items.map(function (item) {
            return item.marker + esc(item.seriesName) + ": <b>" + esc(format(item.value[1])) +
              "</b>";
          })).join("<br>");
        }
      },
      xAxis: {
        type: "value",
        name: timeName,
        nameLocation: "middle",
        nameGap: 26,
        min: 0,
        max: data.end || null,
        axisLabel: { hideOverlap: true }
      },
      yAxis: {
        type: "value",
        name: yName,
        min: 0,
        minInterval: format === count ? 1 : null,
        nameTextStyle: { align: "left" },
        axisLabel: { formatter: compact }
      },
      dataZoom: [
        { type: "inside", filterMode: "none" },
        { type: "slider", filterMode: "none", height: 16, bottom: 4 }
      ],
      series: series
    });
  }

  /* per hub, one bar per policy (horizontal: the hubs' names stay readable on a phone) */
  function hubChart(id, key, xName, format) {
    var chart = start(id);
    var names = data.hubs.map(function (h) { return h.name; });
    var series = data.policies.map(function (policy, n) {
      return {
        name: policy,
        type: "bar",
        color: policyStyle(n).colour,
        data: data.hubs.map(function (h) { return h[key][policy]; })
      };
    });
    chart.getDom().style.height = Math.max(320, 90 + names.length * (10 + 9 * series.length)) +
      "px";
    chart.resize();
    chart.setOption({
      animation: false,
      aria: { enabled: true, decal: { show: true } },
      legend: { type: "scroll", top: 0, left: 0, right: 0 },
      grid: { left: 8, right: 28, top: 40, bottom: 36, containLabel: true },
      tooltip: {
        trigger: "axis",
        confine: true,
        axisPointer: { type: "shadow" },
        formatter: function (items) {
          if (!items.length) return "";
          var hub = data.hubs[items[0].dataIndex];
          return ["<b>" + esc(hub.title) + "</b>"].concat(items.map(function (item) {
            return item.marker + esc(item.seriesName) + ": " + esc(format(item.value));
          })).join("<br>");
        }
      },
      xAxis: {
        type: "value",
        name: xName,
        nameLocation: "middle",
        nameGap: 24,
        min: 0,
        axisLabel: { formatter: key === "utilisation" ? percent : compact, hideOverlap: true }
      },
      yAxis: { type: "category", data: names, inverse: true, axisLabel: { fontSize: 11 } },
      series: series
    });
  }

  function drawMaps() {
    window.echarts.registerMap("china",
      JSON.parse(document.getElementById("china-geo").textContent));
    var top = 0;
    data.policies.forEach(function (policy) {
      data.sites[policy].forEach(function (s) { top = Math.max(top, s.device_hours); });
    });
    data.policies.forEach(function (policy, n) {
      var chart = start("map-" + n);
      var narrow = chart.getDom().clientWidth < 520;
      function points(side) {
        return data.sites[policy].filter(function (s) { return s.ew === side; })
          .map(function (s) {
            return { name: s.id, value: [s.lon, s.lat, s.device_hours], site: s };
          });
      }
      function series(name, side, colour) {
        return {
          name: name,
          type: "scatter",
          coordinateSystem: "geo",
          data: points(side),
          symbolSize: function (value) {
            return 6 + 34 * Math.sqrt(top > 0 ? value[2] / top : 0);
          },
          itemStyle: { color: colour, opacity: 0.7, borderColor: "#fff", borderWidth: 1 },
          label: {
            show: !narrow,
            formatter: function (p) { return p.data.site.device_hours > 0 ? p.name : ""; },
            position: "right",
            fontSize: 10,
            color: "#1d2733"
          },
          emphasis: { scale: 1.2 }
        };
      }
      chart.setOption({
        animation: false,
        legend: { top: 0, left: 0, data: ["East 东部", "West 西部"] },
        tooltip: {
          trigger: "item",
          confine: true,
          formatter: function (p) {
            var s = p.data && p.data.site;
            if (!s) return "";
            return [
              "<b>" + esc(s.name) + "</b> (" + esc(s.id) + ")",
              "Hub 枢纽: " + esc(s.hub),
              "Device-hours 设备时: " + esc(number(s.device_hours, 1)),
              "GPU-hours GPU 时: " + esc(number(s.gpu_hours, 1)),
              "CPU core-hours CPU 核时: " + esc(number(s.cpu_core_hours, 1))
            ].join("<br>");
          }
        },
        geo: {
          map: "china",
          roam: true,
          center: [104.5, 36],
          zoom: 1.15,
          top: 30,
          bottom: 10,
          label: { show: false },
          itemStyle: { areaColor: "#e9eef4", borderColor: "#9aa5b1", borderWidth: 0.6 },
          emphasis: { label: { show: false }, itemStyle: { areaColor: "#dbe5ef" } },
          select: { disabled: true },
          tooltip: { show: false }
        },
        series: [series("East 东部", "east", EAST), series("West 西部", "west", WEST)]
      });
    });
  }

  function cny(v) { return "¥" + number(v, 2); }
  function kg(v) { return number(v, 1) + " kg"; }
  function count(v) { return number(v, 0); }

  timeChart("chart-busy-gpus", "busy_gpus", "Busy GPUs 忙碌 GPU (GPUs 块)", count);
  timeChart("chart-busy-cpu", "busy_cpu_cores", "Busy CPU cores 忙碌 CPU 核 (cores 核)", count);
  timeChart("chart-queued", "queued", "Queued tasks 排队任务 (tasks 个)", count);
  timeChart("chart-cost", "cost_cny", "Cost 费用 (CNY 元)", cny);
  timeChart("chart-carbon-market", "carbon_kg", "Carbon 碳排 (kg CO₂)", kg);
  timeChart("chart-carbon-location", "carbon_location_kg", "Carbon 碳排 (kg CO₂)", kg);
  hubChart("chart-hub-gpu", "gpu_hours", "GPU-hours GPU 时 (h)", function (v) {
    return number(v, 1) + " GPU-h";
  });
  hubChart("chart-hub-cpu", "cpu_core_hours", "CPU core-hours CPU 核时 (h)", function (v) {
    return number(v, 1) + " core-h";
  });
  hubChart("chart-hub-util", "utilisation", "Utilisation 利用率 (%)", function (v) {
    return number(v * 100, 1) + "%";
  });
  drawMaps();

  var pending = null;
  window.addEventListener("resize", function () {
    if (pending) window.clearTimeout(pending);
    pending = window.setTimeout(function () {
      charts.forEach(function (chart) { chart.resize(); });
    }, 100);
  });
  document.documentElement.setAttribute("data-charts-drawn", String(charts.length));
})();
