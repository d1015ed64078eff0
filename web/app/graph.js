// The namespace page's topology graph: workloads as nodes (links to their pages), the
// edges of `/api/namespace` as arrows from client to server, labelled with requests
// per second and success rate, a closed padlock on each mutual-TLS edge and an open,
// labelled one on each plaintext edge; an edge whose calls the server's policy refused
// is drawn red and says how many a second ("denied 1.0/s"). Plain SVG laid out here: layered by call depth
// (callers left, whom they call to the right), deterministic, and kept as long as the
// graph's shape is the same, so live numbers never move a node.

import { svg } from './dom.js';
import { denied, percent, responded, rps } from './format.js';

/** The URL scheme's kind of each workload kind (`#/ns/NS/KIND/NAME`). */
export const SHORT = { deployment: 'deploy', statefulset: 'sts', daemonset: 'ds', pod: 'pod' };

const NODE_W = 200;
const NODE_H = 46;
/** Columns leave room between boxes for an edge's label. */
const COLUMN = 410;
const ROW = 84;
/** Room around the boxes: above for a call to itself, aside for a call back. */
const PAD = 28;
const SIDE = 70;
/** How far apart parallel edges (same ends, other identities) are drawn. */
const SPREAD = 22;

/** A resource's node: its kind, namespace and name. */
export const nodeId = (r) => `${r.type}/${r.namespace ?? ''}/${r.name}`;

/** One edge row: its ends, both identities and whether it is mTLS. */
export const edgeKey = (e) =>
  [nodeId(e.src), nodeId(e.dst), e.client_id ?? '', e.server_id ?? '', e.secured].join('|');

/** The workload page of a resource. */
export function workloadHref(r) {
  return `#/ns/${encodeURIComponent(r.namespace)}/${SHORT[r.type]}/${encodeURIComponent(r.name)}`;
}

/** A resource as the page names it: `deploy/web`, with its namespace when not `here`. */
export function resourceName(r, here) {
  const name = `${SHORT[r.type] ?? r.type}/${r.name}`;
  return r.namespace === here ? name : `${name} (namespace ${r.namespace ?? '-'})`;
}

/**
 * An edge's label: its rate and success rate as `mesh stat` prints them, and what the
 * server's policy denied, if anything.
 */
export function edgeLabel(e) {
  const numbers = `${rps(e.rps, responded(e))} · ${percent(e.success_rate)}`;
  const refused = denied(e);
  return refused ? `${numbers} · ${refused}` : numbers;
}

/**
 * Positions of `ids` (sorted) given directed `pairs` `[from, to]`: the column is the
 * longest call chain leading to the node (edges closing a cycle, found by a
 * depth-first walk in name order, are left out), the row within a column follows the
 * mean row of the node's callers, then the name. Returns `Map(id => {x, y})`, and
 * the drawing's size.
 */
export function layout(ids, pairs) {
  const out = new Map(ids.map((id) => [id, []]));
  const into = new Map(ids.map((id) => [id, []]));
  for (const [a, b] of pairs) {
    if (a === b || !out.has(a) || !out.has(b)) continue;
    out.get(a).push(b);
    into.get(b).push(a);
  }
  for (const list of out.values()) list.sort();
  const dag = new Map(ids.map((id) => [id, []]));
  const seen = new Map();
  const finished = [];
  const visit = (id) => {
    seen.set(id, 'open');
    for (const next of out.get(id)) {
      if (seen.get(next) === 'open') continue; // closes a cycle
      dag.get(id).push(next);
      if (!seen.has(next)) visit(next);
    }
    seen.set(id, 'done');
    finished.push(id);
  };
  // Callers no one calls first, so a cycle is cut where it is entered.
  for (const id of ids) if (into.get(id).length === 0 && !seen.has(id)) visit(id);
  for (const id of ids) if (!seen.has(id)) visit(id);
  const depth = new Map(ids.map((id) => [id, 0]));
  for (const id of finished.reverse()) {
    for (const next of dag.get(id)) depth.set(next, Math.max(depth.get(next), depth.get(id) + 1));
  }
  const columns = [];
  for (const id of ids) (columns[depth.get(id)] ??= []).push(id);
  const row = new Map();
  for (const column of columns) {
    if (!column) continue;
    const mean = (id) => {
      const rows = into.get(id).filter((c) => row.has(c)).map((c) => row.get(c));
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : -1;
    };
    const keyed = column.map((id) => [mean(id), id]);
    keyed.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    keyed.forEach(([, id], i) => row.set(id, i));
  }
  const tallest = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  const positions = new Map();
  for (const id of ids) {
    const column = columns[depth.get(id)];
    const offset = ((tallest - column.length) * ROW) / 2;
    positions.set(id, { x: SIDE + depth.get(id) * COLUMN, y: PAD + 14 + offset + row.get(id) * ROW });
  }
  return {
    positions,
    width: SIDE * 2 + (columns.length - 1) * COLUMN + NODE_W,
    height: PAD * 2 + 28 + (tallest - 1) * ROW + NODE_H + 50,
  };
}

/** A padlock, closed (mTLS) or open (plaintext), centred on the origin. */
function padlock(closed) {
  return svg('g', { class: closed ? 'lock' : 'lock open', 'aria-hidden': 'true' },
    svg('path', { class: 'shackle', d: closed ? 'M-4.5 -2 v-3.5 a4.5 4.5 0 0 1 9 0 v3.5' : 'M-4.5 -5 v-3.5 a4.5 4.5 0 0 1 9 0 v1' }),
    svg('rect', { class: 'body', x: -6.5, y: -2, width: 13, height: 10, rx: 1.5 }));
}

/** The curve of the `k`th edge between two nodes, and its middle. */
function curve(from, to, k) {
  const bend = k * SPREAD;
  if (from === to) {
    const x = from.x + NODE_W - 24;
    const y = from.y;
    const d = `M${x} ${y} C${x} ${y - 50 - bend} ${x + 60 + bend} ${y - 30} ${from.x + NODE_W} ${y + 12}`;
    return { d, mid: { x: x + 22, y: y - 34 - bend / 2 } };
  }
  const x1 = from.x + NODE_W;
  const y1 = from.y + NODE_H / 2;
  const x2 = to.x;
  const y2 = to.y + NODE_H / 2;
  // A call back to the left (a cycle) bows below the nodes, within the side room.
  const back = x2 <= x1 ? NODE_H + 30 : 0;
  const reach = back ? SIDE - 8 : Math.max(70, Math.abs(x2 - x1) / 2);
  const c1 = { x: x1 + reach, y: y1 + bend + back };
  const c2 = { x: x2 - reach, y: y2 + bend + back };
  const d = `M${x1} ${y1} C${c1.x} ${c1.y} ${c2.x} ${c2.y} ${x2} ${y2}`;
  // The label a little past the middle, where edges fanning out of one node have
  // parted.
  const t = back ? 0.5 : 0.6;
  const at = (a, b, c, d) =>
    (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t ** 2 * c + t ** 3 * d;
  const mid = { x: at(x1, c1.x, c2.x, x2), y: at(y1, c1.y, c2.y, y2) };
  return { d, mid };
}

/** Cuts a long name for the box; the whole name is in the node's title. */
const fit = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * The graph of namespace `here`: `update(nodes, edges)` draws `nodes` (resources)
 * and `edges` (`/api/namespace` edge rows); while the shape is the same only the
 * edges' labels change.
 */
export function topology(here) {
  const titleId = 'topology-title';
  const title = svg('title', { id: titleId });
  const root = svg('svg', { id: 'topology', class: 'graph', role: 'img', 'aria-labelledby': titleId });
  let shape = null;
  let labels = new Map();

  function draw(nodes, edges) {
    const ids = nodes.map(nodeId);
    const { positions, width, height } = layout(ids, edges.map((e) => [nodeId(e.src), nodeId(e.dst)]));
    root.setAttribute('viewBox', `0 0 ${width} ${height}`);
    root.setAttribute('width', width);
    root.dataset.width = width;
    const defs = svg('defs', {},
      svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7,
                      markerHeight: 7, orient: 'auto-start-reverse' },
        svg('path', { class: 'arrow', d: 'M0 0 L10 5 L0 10 z' })));
    const count = new Map();
    labels = new Map();
    const drawn = edges.map((e) => {
      const [from, to] = [nodeId(e.src), nodeId(e.dst)];
      const pair = `${from}|${to}`;
      const k = count.get(pair) ?? 0;
      count.set(pair, k + 1);
      const { d, mid } = curve(positions.get(from), positions.get(to), k);
      const text = svg('text', { class: 'edge-text', y: 15 });
      const said = svg('title');
      const g = svg('g', {
        class: e.secured ? 'edge secured' : 'edge plaintext',
        dataset: { from, to, secured: String(e.secured), key: edgeKey(e) },
      },
      svg('path', { class: 'edge-line', d, 'marker-end': 'url(#arrow)' }),
      svg('g', { class: 'edge-label', transform: `translate(${mid.x.toFixed(1)} ${mid.y.toFixed(1)})` },
        said, svg('g', { transform: 'translate(0 -4)' }, padlock(e.secured)), text));
      labels.set(edgeKey(e), { g, text, said });
      return g;
    });
    const drawnNodes = nodes.map((r) => {
      const { x, y } = positions.get(nodeId(r));
      const outside = r.namespace !== here;
      const kind = SHORT[r.type] ?? r.type;
      return svg('a', {
        class: outside ? 'node outside' : 'node',
        href: workloadHref(r),
        dataset: { id: nodeId(r) },
        'aria-label': `${r.type} ${r.name}${outside ? ` in namespace ${r.namespace}` : ''}`,
        transform: `translate(${x} ${y})`,
      },
      svg('title', {}, `${r.type} ${r.name} in namespace ${r.namespace}`),
      svg('rect', { class: 'node-box', width: NODE_W, height: NODE_H, rx: 6 }),
      svg('text', { class: 'node-name', x: 12, y: 20 }, fit(r.name, 24)),
      svg('text', { class: 'node-kind', x: 12, y: 37 },
        outside ? fit(`${kind} · namespace ${r.namespace}`, 30) : kind));
    });
    root.replaceChildren(title, defs, svg('g', { class: 'edges' }, drawn), svg('g', { class: 'nodes' }, drawnNodes));
  }

  function label(e) {
    const { g, text, said } = labels.get(edgeKey(e));
    const numbers = edgeLabel(e);
    text.textContent = e.secured ? numbers : `plaintext · ${numbers}`;
    said.textContent = `${e.src.name} to ${e.dst.name}: ${numbers}, ${e.secured ? 'mutual TLS' : 'plaintext'}` +
      (denied(e) ? ', refused by the server\'s authorization policy' : '');
    g.classList.toggle('denied', denied(e) != null);
    g.dataset.denied = String(e.unauthorized_rps ?? 0);
    g.dataset.rps = String(e.rps);
    g.dataset.success = e.success_rate == null ? '' : String(e.success_rate);
  }

  return {
    element: root,
    /** Draws the resources `nodes` and the edge rows `edges`. */
    update(nodes, edges) {
      nodes = [...nodes].sort((a, b) => (nodeId(a) < nodeId(b) ? -1 : nodeId(a) > nodeId(b) ? 1 : 0));
      const next = `${nodes.map(nodeId).join('\n')}\n\n${edges.map(edgeKey).join('\n')}`;
      if (next !== shape) {
        shape = next;
        draw(nodes, edges);
      }
      for (const e of edges) label(e);
      const mtls = edges.filter((e) => e.secured).length;
      title.textContent = `Topology of namespace ${here}: ${nodes.length} workloads, ` +
        `${edges.length} edges (${mtls} mutual TLS, ${edges.length - mtls} plaintext); ` +
        'the edges table below says the same in text.';
    },
  };
}
