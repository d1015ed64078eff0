// The workload page (`#/ns/NAME/KIND/WNAME`, KIND one of deploy, sts, ds, pod): its
// success rate, rps and latency charts over the last ten minutes (the controller's
// `/api/series`, then live from its stat stream), its golden metrics and TCP stats,
// who calls it and whom it calls, its edges with both identities, its services'
// routes (or the profile `mesh profile --template` would generate), and its pods.
// Each section shows the `mesh` command that prints the same.

import { lineChart } from './chart.js';
import { command, h } from './dom.js';
import { bytesPerSecond, denied, fixed, ms, pods, responded, rps } from './format.js';
import { subscribe } from './live.js';
import { goldenColumns } from './golden.js';
import { sortableTable } from './table.js';

/** The `mesh stat` short kind of each resource type the API names. */
const SHORT = { deployment: 'deploy', statefulset: 'sts', daemonset: 'ds', pod: 'pod' };
/** The API's (and the CLI's) kind for a page's KIND. */
const API_KIND = { deploy: 'deploy', sts: 'sts', ds: 'ds', pod: 'po' };
const TITLE = { deploy: 'Deployment', sts: 'StatefulSet', ds: 'DaemonSet', pod: 'Pod' };

const MINUTES = 10;
const STEP_S = 10;
const SPAN = MINUTES * 60_000;

const enc = encodeURIComponent;

/** A link to a resource's page, when it has one. */
function link(resource) {
  const kind = SHORT[resource.type];
  const label = `${kind ? API_KIND[kind] : resource.type}/${resource.name}`;
  if (!kind || !resource.namespace) return label;
  return h('a', { href: `#/ns/${enc(resource.namespace)}/${kind}/${enc(resource.name)}` }, label);
}

/** The golden-metric columns, then `extra`. */
const golden = (extra = []) => [...goldenColumns({ meshed: false }), ...extra];

const tcpOpen = (t) => t.open_connections > 0 || t.opened > 0;
const TCP = [
  { key: 'tcp', label: 'TCP conns', num: true, value: (r) => r.tcp.open_connections,
    cell: (r) => (tcpOpen(r.tcp) ? String(r.tcp.open_connections) : '-') },
  { key: 'read', label: 'Read', num: true, value: (r) => r.tcp.read_bytes_per_second,
    cell: (r) => (tcpOpen(r.tcp) ? bytesPerSecond(r.tcp.read_bytes_per_second) : '-') },
  { key: 'write', label: 'Written', num: true, value: (r) => r.tcp.write_bytes_per_second,
    cell: (r) => (tcpOpen(r.tcp) ? bytesPerSecond(r.tcp.write_bytes_per_second) : '-') },
];

/** A padlock: this hop is mutual TLS. */
function padlock() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  for (const [k, v] of Object.entries({ viewBox: '0 0 12 14', class: 'padlock', role: 'img', 'aria-label': 'mutual TLS' })) {
    svg.setAttribute(k, v);
  }
  const shackle = document.createElementNS(ns, 'path');
  shackle.setAttribute('d', 'M3 6V4a3 3 0 0 1 6 0v2');
  shackle.setAttribute('class', 'shackle');
  const body = document.createElementNS(ns, 'rect');
  for (const [k, v] of Object.entries({ x: 1, y: 6, width: 10, height: 8, rx: 1.5, class: 'lock-body' })) {
    body.setAttribute(k, v);
  }
  svg.append(shackle, body);
  return svg;
}

function section(id, title, cmd, ...body) {
  return h('section', { class: 'part', 'aria-labelledby': `${id}-title` },
    h('h2', { id: `${id}-title` }, title),
    cmd ? command(cmd) : null,
    ...body);
}

/** Shows the workload page in `main` (a page of `routes.js`). */
export function workload(main, { params: [ns, kind, name], onState }) {
  const resource = `${API_KIND[kind]}/${name}`;
  const shown = `${kind === 'pod' ? 'po' : kind}/${name}`;
  const q = `resource=${enc(resource)}&namespace=${enc(ns)}`;
  const stops = [];
  let stopped = false;
  const live = (opts) => stops.push(subscribe({ onState, ...opts }));
  const updated = h('p', { class: 'updated', id: 'updated' });
  const touch = () => { updated.textContent = `Updated ${new Date().toLocaleTimeString()}`; };

  // --- The charts: the series, then a live point per stream answer. ---
  const charts = [
    lineChart({ id: 'chart-success', title: 'Success rate', unit: '%', max: 100, span: SPAN,
      gap: 90_000, series: [{ key: 'success', label: 'success' }],
      format: (v) => (v == null ? '-' : `${fixed(v, 2)}%`), tick: (v) => `${fixed(v, 0)}%` }),
    lineChart({ id: 'chart-rps', title: 'Requests per second', unit: 'rps', span: SPAN,
      gap: 90_000, series: [{ key: 'rps', label: 'rps' }],
      format: (v) => (v == null ? '-' : `${fixed(v, 1)}rps`), tick: (v) => `${+v.toPrecision(3)}` }),
    lineChart({ id: 'chart-latency', title: 'Latency', unit: 'ms', span: SPAN, gap: 90_000,
      series: [{ key: 'p50', label: 'p50' }, { key: 'p95', label: 'p95' }, { key: 'p99', label: 'p99' }],
      format: ms, tick: (v) => `${+v.toPrecision(3)}` }),
  ];
  let points = [];
  let pending = [];
  let seriesLoaded = false;
  const point = (t, row) => {
    const known = row && row.seconds > 0;
    return {
      t,
      answer: row ?? null,
      values: {
        success: known && row.success_rate != null ? row.success_rate * 100 : null,
        rps: known ? row.rps : null,
        p50: known ? row.latency_ms.p50 : null,
        p95: known ? row.latency_ms.p95 : null,
        p99: known ? row.latency_ms.p99 : null,
      },
    };
  };
  const draw = () => {
    const end = points.length ? points[points.length - 1].t : Date.now();
    points = points.filter((p) => p.t > end - SPAN - STEP_S * 1000);
    for (const c of charts) c.update(points);
  };
  const add = (p) => {
    // A live answer within half a step of the last point stands for it.
    if (points.length && p.t - points[points.length - 1].t < (STEP_S * 1000) / 2) points.pop();
    points.push(p);
    draw();
  };
  const rowOf = (doc) => (Array.isArray(doc.rows) ? doc.rows.find((r) => r.resource.name === name) : undefined);
  (async () => {
    try {
      const t0 = Date.now();
      const rsp = await fetch(`/api/series?${q}&minutes=${MINUTES}&step=${STEP_S}s`,
        { headers: { accept: 'application/json' }, cache: 'no-store' });
      if (!rsp.ok) throw new Error(`/api/series answered ${rsp.status}`);
      const doc = await rsp.json();
      points = doc.points.map((p) => point(t0 - p.seconds_ago * 1000, rowOf(p)));
    } catch (e) {
      // The live points still come; the chart starts from them.
      onState('retrying', e);
    }
    seriesLoaded = true;
    for (const p of pending) add(p);
    pending = [];
    draw();
    main.dataset.series = 'true';
  })();
  live({
    stream: `/api/stream/stat?${q}&window=${STEP_S}s&interval=${STEP_S}s`,
    event: 'stat',
    poll: `/api/stat?${q}&window=${STEP_S}s`,
    interval: STEP_S * 1000,
    onData(doc) {
      const p = point(Date.now(), rowOf(doc));
      if (seriesLoaded) add(p);
      else pending.push(p);
    },
  });

  // --- The workload's own numbers over the last minute, with its TCP stats. ---
  const summary = sortableTable({
    id: 'summary',
    caption: `${shown}: meshed pods, success rate, requests per second, latency percentiles and TCP over the last minute`,
    columns: [
      { key: 'name', label: 'Name', value: (r) => r.resource.name, cell: (r) => r.resource.name },
      { key: 'meshed', label: 'Meshed', num: true, value: (r) => r.pods?.meshed ?? null, cell: (r) => pods(r.pods) },
      ...golden(TCP),
    ],
    rowKey: (r) => r.resource.name,
    empty: 'No traffic seen yet',
  });
  live({
    poll: `/api/stat?${q}`,
    onData(doc) {
      summary.update(Array.isArray(doc.rows) ? doc.rows.filter((r) => r.resource.name === name) : []);
      touch();
      main.dataset.loaded = 'true';
    },
  });

  // --- Neighbours: who calls it, whom it calls. ---
  const peerTable = (id, caption) => sortableTable({
    id,
    caption,
    columns: [{ key: 'name', label: 'Resource', value: (r) => r.resource.name, cell: (r) => link(r.resource) },
      ...golden()],
    rowKey: (r) => `${r.resource.namespace ?? ''}/${r.resource.name}`,
    empty: 'None over the last minute',
  });
  const inbound = peerTable('inbound', `What calls ${shown}, as the callers' proxies saw it, over the last minute`);
  const outbound = peerTable('outbound', `What ${shown} calls, as its proxies saw it, over the last minute`);
  const kindQ = `resource=${API_KIND[kind]}&namespace=${enc(ns)}`;
  const active = (doc) => (Array.isArray(doc.rows) ? doc.rows.filter((r) => responded(r) || tcpOpen(r.tcp)) : []);
  live({ poll: `/api/stat?${kindQ}&to=${enc(resource)}`, onData: (doc) => inbound.update(active(doc)) });
  live({ poll: `/api/stat?${kindQ}&from=${enc(resource)}`, onData: (doc) => outbound.update(active(doc)) });

  // --- Edges, with the identities at both ends. ---
  const self = (r) => r.name === name && r.namespace === ns && SHORT[r.type] === kind;
  const edges = sortableTable({
    id: 'edges',
    caption: `Edges to and from ${shown} over the last minute: each end's identity, whether the hop is mutual TLS, ` +
      'and what the server\'s authorization policy denied per second',
    columns: [
      { key: 'src', label: 'From', value: (e) => `${e.src.namespace}/${e.src.name}`, cell: (e) => link(e.src) },
      { key: 'dst', label: 'To', value: (e) => `${e.dst.namespace}/${e.dst.name}`, cell: (e) => link(e.dst) },
      { key: 'secured', label: 'mTLS', value: (e) => (e.secured ? 1 : 0),
        cls: (e) => (e.secured ? 'secured' : 'unsecured'),
        cell: (e) => (e.secured ? h('span', { title: 'mutual TLS' }, padlock(), ' √')
          : h('span', { title: 'not mutual TLS' }, '×')) },
      { key: 'rps', label: 'RPS', num: true, value: (e) => e.rps,
        cell: (e) => rps(e.rps, e.responses.success + e.responses.failure > 0) },
      { key: 'client', label: 'Client identity', value: (e) => e.client_id, cell: (e) => e.client_id ?? '-' },
      { key: 'server', label: 'Server identity', value: (e) => e.server_id, cell: (e) => e.server_id ?? '-' },
      { key: 'denied', label: 'Denied', num: true, value: (e) => e.unauthorized_rps ?? 0,
        cls: (e) => (denied(e) ? 'health-bad' : null), cell: (e) => denied(e) ?? '-' },
    ],
    rowKey: (e) => `${e.src.namespace}/${e.src.name}>${e.dst.namespace}/${e.dst.name}|${e.client_id}|${e.server_id}|${e.secured}`,
    empty: 'No edges over the last minute',
  });
  live({
    poll: `/api/edges?${kindQ}`,
    onData: (doc) => edges.update(Array.isArray(doc.edges) ? doc.edges.filter((e) => self(e.src) || self(e.dst)) : []),
  });

  // --- Pods, and the services' routes: what the index knows of the workload. ---
  const podTable = sortableTable({
    id: 'pods',
    caption: `The pods of ${shown} over the last minute`,
    columns: [{ key: 'name', label: 'Pod', value: (r) => r.resource.name,
      cell: (r) => h('a', { href: `#/ns/${enc(ns)}/pod/${enc(r.resource.name)}` }, r.resource.name) },
    { key: 'meshed', label: 'Meshed', num: true, value: (r) => r.pods?.meshed ?? null, cell: (r) => pods(r.pods) },
    ...golden(TCP)],
    rowKey: (r) => r.resource.name,
    empty: 'No pods known',
  });
  const routesBox = h('div', { id: 'routes' }, h('p', { class: 'empty' }, 'Finding the services…'));
  let podNames = new Set([...(kind === 'pod' ? [name] : [])]);
  live({
    poll: `/api/stat?resource=po&namespace=${enc(ns)}`,
    onData: (doc) => podTable.update(Array.isArray(doc.rows) ?
      doc.rows.filter((r) => podNames.has(r.resource.name)) : []),
  });
  (async () => {
    let doc;
    try {
      const rsp = await fetch(`/api/workload?${q}`, { headers: { accept: 'application/json' } });
      if (!rsp.ok) throw new Error(`/api/workload answered ${rsp.status}`);
      doc = await rsp.json();
    } catch (e) {
      routesBox.replaceChildren(h('p', { class: 'empty' }, `The workload's services are not known: ${e.message}`));
      return;
    }
    if (stopped) return;
    podNames = new Set(doc.pods.map((p) => p.name));
    routesBox.replaceChildren(...(doc.services.length ? doc.services.map(service) :
      [h('p', { class: 'empty' }, 'No service selects these pods.')]));
  })();

  function service(svc) {
    const cmd = svc.profile ? `mesh routes svc/${svc.name} -n ${svc.namespace}`
      : `mesh profile --template ${svc.name} -n ${svc.namespace}`;
    const box = h('div', { class: 'service', dataset: { service: svc.name, profile: String(svc.profile) } },
      h('h3', {}, `Service ${svc.name}`), command(cmd));
    if (svc.profile) {
      const t = sortableTable({
        id: `routes-${svc.name}`,
        caption: `Routes of service ${svc.name} (its ServiceProfile), as every client sent to them over the last minute`,
        // Sorted first as the API sorts them: by name, the default route last.
        columns: [{ key: 'route', label: 'Route', value: (r) => r.order, cell: (r) => r.route ?? '[DEFAULT]' },
          ...golden()],
        rowKey: (r) => `${r.dst}|${r.route ?? '\u0000default'}`,
        empty: 'No requests over the last minute',
      });
      box.append(h('div', { class: 'scroll' }, t.table));
      live({
        poll: `/api/routes?resource=${enc(`svc/${svc.name}`)}&namespace=${enc(svc.namespace)}`,
        onData: (d) => t.update(Array.isArray(d.routes) ? d.routes.map((r, order) => ({ ...r, order })) : []),
      });
    } else {
      const pre = h('pre', { class: 'profile', tabindex: '0', hidden: true,
        'aria-label': `A generated ServiceProfile for ${svc.name}` });
      const button = h('button', { type: 'button', class: 'generate', 'aria-expanded': 'false',
        onclick: async () => {
          if (pre.hidden && !pre.textContent) {
            try {
              const rsp = await fetch(`/api/profile-template?service=${enc(svc.name)}&namespace=${enc(svc.namespace)}`);
              pre.textContent = rsp.ok ? await rsp.text() : `The controller answered ${rsp.status}`;
            } catch (e) {
              pre.textContent = `The controller did not answer: ${e.message}`;
            }
          }
          pre.hidden = !pre.hidden;
          button.setAttribute('aria-expanded', String(!pre.hidden));
        } }, 'Show a generated profile');
      box.append(h('p', {}, 'No ServiceProfile describes this service, so its requests have no routes. ', button), pre);
    }
    return box;
  }

  const resQ = `resource=${enc(`${kind}/${name}`)}&namespace=${enc(ns)}`;
  main.replaceChildren(h('section', { class: 'page workload', 'aria-labelledby': 'page-title' },
    h('p', { class: 'crumbs' }, h('a', { href: `#/ns/${enc(ns)}` }, `Namespace ${ns}`), ' / ', shown),
    h('h1', { id: 'page-title', tabindex: '-1' }, `${TITLE[kind]} ${name}`),
    h('p', { class: 'actions' },
      h('a', { id: 'tap-link', class: 'button', href: `#/tap?${resQ}` }, 'Tap this workload'),
      h('a', { id: 'top-link', class: 'button', href: `#/top?${resQ}` }, 'Top')),
    command(`mesh stat ${shown} -n ${ns} -o wide`),
    h('div', { class: 'scroll' }, summary.table),
    updated,
    section('charts', 'Over the last 10 minutes', `mesh stat ${shown} -n ${ns} -t ${STEP_S}s`,
      h('div', { class: 'charts' }, charts.map((c) => c.el))),
    section('neighbours', 'Inbound and outbound', null,
      command(`mesh stat ${API_KIND[kind]} -n ${ns} --to ${shown}`),
      h('div', { class: 'scroll' }, inbound.table),
      command(`mesh stat ${API_KIND[kind]} -n ${ns} --from ${shown}`),
      h('div', { class: 'scroll' }, outbound.table)),
    section('edges', 'Edges and identities', `mesh edges ${API_KIND[kind]} -n ${ns} -o wide`,
      h('div', { class: 'scroll' }, edges.table)),
    section('routes', 'Routes', null, routesBox),
    section('pods', 'Pods', `mesh stat po -n ${ns} -o wide`, h('div', { class: 'scroll' }, podTable.table))));

  return {
    title: `${shown} · ${ns}`,
    stop() {
      stopped = true;
      for (const stop of stops) stop();
    },
  };
}
