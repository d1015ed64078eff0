// A line chart in plain SVG: time along the bottom, a value axis with ticks and its
// unit, one line per series, a legend that gives each series' latest value as text,
// and the points as a table for those who do not see the chart. Accessible: the SVG
// is `role="img"` with a <title> and a <desc> saying what it shows and the latest
// values. The SVG is redrawn whole at each update from at most the span's points, so
// what it holds does not grow with time.

import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
// The drawing's own units: about the pixels of a chart in a third of a laptop's
// screen, so its text reads at the page's size there and grows on a wall display.
const W = 420;
const H = 200;
const PAD = { left: 44, right: 10, top: 10, bottom: 24 };

let charts = 0;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null) continue;
    if (name === 'class') el.setAttribute('class', value);
    else el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child == null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** 1, 2 or 5 times a power of ten, at least `v`: the top of a value axis. */
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) {
    if (m * p >= v * (1 - 1e-9)) return m * p;
  }
  return 10 * p;
}

const clock = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/**
 * id: the figure's id; title: what it shows (`Success rate`); unit: the axis' unit
 * (`%`); series: [{ key, label }]; format(v): a value as text (the page's formats);
 * tick(v): an axis tick as text; max: a fixed top of the axis (else from the data);
 * span: the ms of time shown, ending at the newest point; gap: ms between two points
 * beyond which the line is broken (no data between them).
 *
 * `update(points)`: points `[{ t, values: { key: number|null } }]`, oldest first
 * (null: nothing known then).
 */
export function lineChart({ id, title, unit, series, format, tick, max, span, gap }) {
  charts += 1;
  const titleId = `chart-title-${charts}`;
  const descId = `chart-desc-${charts}`;
  const svgTitle = s('title', { id: titleId }, title);
  const svgDesc = s('desc', { id: descId });
  const plot = s('g', { class: 'plot' });
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`,
    class: 'chart-svg',
  }, svgTitle, svgDesc, plot);
  const latest = series.map((sr, i) => h('span', { class: 'latest', dataset: { key: sr.key } }));
  const legend = h('ul', { class: 'legend' }, series.map((sr, i) =>
    h('li', {}, h('span', { class: `swatch series-${i}`, 'aria-hidden': 'true' }), `${sr.label} `, latest[i])));
  const tbody = h('tbody');
  const details = h('details', { class: 'chart-data' },
    h('summary', {}, `${title}: the points as a table`),
    h('div', { class: 'scroll' }, h('table', { class: 'data' },
      h('caption', {}, `${title} (${unit}), one row per point`),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Time'),
        series.map((sr) => h('th', { scope: 'col', class: 'num' }, sr.label)))),
      tbody)));
  const figure = h('figure', { id, class: 'chart' },
    h('figcaption', {}, h('span', { class: 'chart-title' }, `${title} (${unit})`), legend),
    svg, details);
  let last = [];
  details.addEventListener('toggle', () => table(last));

  function table(points) {
    if (!details.open) {
      tbody.replaceChildren();
      return;
    }
    tbody.replaceChildren(...points.slice().reverse().map((p) =>
      h('tr', {}, h('th', { scope: 'row' }, new Date(p.t).toLocaleTimeString()),
        series.map((sr) => h('td', { class: 'num' }, format(p.values[sr.key]))))));
  }

  function update(points) {
    last = points;
    const end = points.length ? points[points.length - 1].t : Date.now();
    const start = end - span;
    const shown = points.filter((p) => p.t >= start);
    let top = max;
    if (top == null) {
      let m = 0;
      for (const p of shown) for (const sr of series) m = Math.max(m, p.values[sr.key] ?? 0);
      top = niceCeil(m);
    }
    const x = (t) => PAD.left + ((t - start) / span) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    const parts = [];
    // The value axis: five ticks from zero to the top, with grid lines.
    for (let i = 0; i <= 4; i += 1) {
      const v = (top * i) / 4;
      parts.push(s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
        s('text', { class: 'tick', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, tick(v)));
    }
    // The time axis: a tick a minute (two when the span is long).
    const every = span > 6 * 60_000 ? 120_000 : 60_000;
    for (let t = Math.ceil(start / every) * every; t <= end; t += every) {
      parts.push(s('line', { class: 'axis', x1: x(t), x2: x(t), y1: H - PAD.bottom, y2: H - PAD.bottom + 4 }),
        s('text', { class: 'tick', x: x(t), y: H - 6, 'text-anchor': 'middle' }, clock(t)));
    }
    parts.push(s('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }),
      s('line', { class: 'axis', x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
    series.forEach((sr, i) => {
      // A line per run of known points; a lone point is a dot.
      let run = [];
      let prev = null;
      const flush = () => {
        if (run.length === 1) {
          parts.push(s('circle', { class: `dot series-${i}`, cx: run[0][0], cy: run[0][1], r: 2.5 }));
        } else if (run.length > 1) {
          parts.push(s('polyline', { class: `line series-${i}`, points: run.map((p) => p.join(',')).join(' ') }));
        }
        run = [];
      };
      for (const p of shown) {
        const v = p.values[sr.key];
        if (v == null) continue;
        if (prev != null && p.t - prev > gap) flush();
        run.push([x(p.t).toFixed(1), y(Math.min(v, top)).toFixed(1)]);
        prev = p.t;
      }
      flush();
    });
    plot.replaceChildren(...parts);
    const now = points.length ? points[points.length - 1].values : {};
    const said = series.map((sr, i) => {
      const text = format(now[sr.key]);
      latest[i].textContent = text;
      return `${sr.label} ${text}`;
    });
    figure.dataset.points = String(shown.length);
    svgDesc.textContent = points.length ?
      `${title} over the last ${Math.round(span / 60_000)} minutes; latest: ${said.join(', ')}` :
      `${title}: no points yet`;
    table(points);
  }

  update([]);
  return { el: figure, update };
}
