// The namespace page (`#/ns/NAME`): its deployments, statefulsets, daemonsets, pods and
// services with their golden metrics, and the topology of its workloads with an edges
// table saying the same in text; live, from `/api/stream/namespace`: one stream (one
// connection, one timer and one read of the metrics per interval on the controller)
// for all of it, every number read at the same moment.

import { command, h } from './dom.js';
import { denied, health, percent, responded, rps } from './format.js';
import { goldenColumns } from './golden.js';
import { SHORT, edgeKey, nodeId, resourceName, topology, workloadHref } from './graph.js';
import { subscribe } from './live.js';
import { sortableTable } from './table.js';

/** The kinds of the page's tables: the answer's key, `mesh stat`'s type, headings. */
const KINDS = [
  { kind: 'deployment', stat: 'deploy', title: 'Deployments' },
  { kind: 'statefulset', stat: 'sts', title: 'StatefulSets' },
  { kind: 'daemonset', stat: 'ds', title: 'DaemonSets' },
  { kind: 'pod', stat: 'po', title: 'Pods' },
  { kind: 'service', stat: 'svc', title: 'Services' },
];

/** The graph's own nodes: the namespace's workloads, with or without edges. */
const WORKLOADS = ['deployment', 'statefulset', 'daemonset'];

function kindColumns({ kind, title }) {
  const page = SHORT[kind];
  return [
    { key: 'name', label: title.replace(/s$/, ''), value: (r) => r.resource.name,
      cell: (r) => (page ? h('a', { href: workloadHref(r.resource) }, r.resource.name) : r.resource.name) },
    ...goldenColumns({ meshed: kind !== 'service', tcp: true }),
  ];
}

function edgeColumns(here) {
  const end = (key, label, of) => ({
    key, label, value: (e) => resourceName(of(e), here),
    cell: (e) => h('a', { href: workloadHref(of(e)) }, resourceName(of(e), here)),
  });
  return [
    end('from', 'From', (e) => e.src),
    end('to', 'To', (e) => e.dst),
    { key: 'rps', label: 'RPS', num: true, value: (e) => e.rps, cell: (e) => rps(e.rps, responded(e)) },
    { key: 'success', label: 'Success', num: true, value: (e) => e.success_rate,
      cls: (e) => `health-${health(e.success_rate)}`, cell: (e) => percent(e.success_rate) },
    { key: 'denied', label: 'Denied', num: true, value: (e) => e.unauthorized_rps ?? 0,
      cls: (e) => (denied(e) ? 'health-bad' : null), cell: (e) => denied(e) ?? '-' },
    { key: 'mtls', label: 'mTLS', value: (e) => (e.secured ? 'yes' : 'no'),
      cls: (e) => (e.secured ? null : 'health-bad'),
      cell: (e) => (e.secured ? 'yes (mutual TLS)' : 'no (plaintext)') },
    { key: 'client', label: 'Client identity', value: (e) => e.client_id ?? '', cell: (e) => e.client_id ?? '-' },
    { key: 'server', label: 'Server identity', value: (e) => e.server_id ?? '', cell: (e) => e.server_id ?? '-' },
  ];
}

/** Shows namespace `name` in `main` (a page of `routes.js`). */
export function namespace(main, { params: [name], onState }) {
  const query = `namespace=${encodeURIComponent(name)}`;
  const kinds = KINDS.map((k) => {
    const table = sortableTable({
      id: `workloads-${k.stat}`,
      caption: `${k.title} of namespace ${name}: ${k.kind === 'service' ? '' : 'meshed pods, '}` +
        'success rate, requests per second, latency percentiles and open TCP connections over the last minute',
      columns: kindColumns(k),
      rowKey: (r) => r.resource.name,
      empty: 'None',
    });
    const section = h('section', { class: 'kind', hidden: true, 'aria-labelledby': `kind-${k.stat}` },
      h('h3', { id: `kind-${k.stat}` }, k.title),
      command(`mesh stat ${k.stat} -n ${name}`),
      h('div', { class: 'scroll' }, table.table));
    return { ...k, table, section };
  });
  const waiting = h('p', { class: 'empty', id: 'workloads-none' }, 'Waiting for the controller…');

  const graph = topology(name);
  const edges = sortableTable({
    id: 'edges',
    caption: `Edges of namespace ${name}: who calls whom, requests per second, success rate, ` +
      'what the server\'s authorization policy denied per second, ' +
      'whether the hop is mutual TLS, and the identities of both ends',
    columns: edgeColumns(name),
    rowKey: edgeKey,
    empty: 'No edges: no meshed workload here has called or been called in the last minute.',
  });
  const edgeCommands = h('div', { class: 'commands' });
  const updated = h('p', { class: 'updated', id: 'updated' });

  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, `Namespace ${name}`),
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ` › namespace ${name}`),
    h('section', { 'aria-labelledby': 'workloads-title' },
      h('h2', { id: 'workloads-title' }, 'Workloads'),
      waiting,
      kinds.map((k) => k.section)),
    h('section', { 'aria-labelledby': 'topology-heading' },
      h('h2', { id: 'topology-heading' }, 'Topology'),
      edgeCommands,
      h('figure', { class: 'topology' },
        h('div', { class: 'scroll graph-box' }, graph.element),
        h('figcaption', {},
          'Arrows point from client to server, labelled with requests per second and success rate. ',
          'A closed padlock marks mutual TLS; an open padlock, a dashed line and the word “plaintext” mark an unencrypted hop. ',
          'Workloads of other namespaces have a dashed box and their namespace. ',
          'Only meshed clients report edges: calls from unmeshed clients count in the tables above but draw no arrow.')),
      h('div', { class: 'scroll' }, edges.table)),
    updated));

  let first = true;
  const stop = subscribe({
    stream: `/api/stream/namespace?${query}&interval=2s`,
    event: 'namespace',
    poll: `/api/namespace?${query}`,
    onState,
    onData(doc) {
      const stat = doc && typeof doc.stat === 'object' && doc.stat ? doc.stat : {};
      const rows = Array.isArray(doc?.edges) ? doc.edges : [];
      let shown = 0;
      for (const k of kinds) {
        const list = Array.isArray(stat[k.kind]) ? stat[k.kind] : [];
        k.section.hidden = list.length === 0;
        shown += list.length;
        k.table.update(list);
      }
      waiting.hidden = shown > 0;
      waiting.textContent = `Nothing seen in namespace ${name}: no pods the controller knows of, and no calls to its services in the last minute.`;

      // The graph: this namespace's workloads, and whatever the edges join.
      const nodes = new Map();
      for (const kind of WORKLOADS) {
        for (const r of Array.isArray(stat[kind]) ? stat[kind] : []) nodes.set(nodeId(r.resource), r.resource);
      }
      for (const e of rows) {
        nodes.set(nodeId(e.src), e.src);
        nodes.set(nodeId(e.dst), e.dst);
      }
      graph.update([...nodes.values()], rows);
      edges.update(rows);
      const types = [...new Set(['deployment', ...rows.map((e) => e.src.type)])]
        .filter((t) => SHORT[t]).map((t) => (t === 'pod' ? 'po' : SHORT[t]));
      const said = types.map((t) => `mesh edges ${t} -n ${name} -o wide`);
      if ([...edgeCommands.querySelectorAll('.command-text')].map((c) => c.textContent).join('\n') !== said.join('\n')) {
        edgeCommands.replaceChildren(...said.map(command));
      }

      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      if (first) {
        first = false;
        performance.mark('mesh:namespace-data');
        main.dataset.loaded = 'true';
      }
    },
  });
  return { title: `Namespace ${name}`, stop };
}
