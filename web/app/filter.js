// What to tap: the form the tap and top pages share, whose fields are `mesh tap`'s
// flags and the API's parameters (controller/src/api.rs, `tap_request`), its state
// in the page's hash so a tap can be linked, and the equivalent command.
//
// The form checks only each field's shape, to say what is wrong before asking;
// everything else (which kinds exist, whether the resource does) is the
// controller's to say, and its 400 is shown as it words it.

import { h } from './dom.js';

/** The default of `--max-rps` (`mesh tap`) and of the API's `max_rps`. */
const DEFAULT_MAX_RPS = '100';

/**
 * Each field: its API parameter (also its hash parameter), its label, its `mesh tap`
 * flag (null for the positional target), a hint, and its check (a message or null).
 */
export const FIELDS = [
  { key: 'resource', label: 'Resource', flag: null, hint: 'TYPE[/NAME], e.g. deploy/web',
    check: (v) => !v ? 'Name what to tap, such as deploy/web or ns/demo.'
      : !/^[^/\s]+(\/[^/\s]+)?$/.test(v) ? `“${v}” is not TYPE[/NAME], such as deploy/web.` : null },
  { key: 'namespace', label: 'Namespace', flag: '-n', hint: 'the demo’s by default',
    check: (v) => v && /\s|\//.test(v) ? `“${v}” is not a namespace name.` : null },
  { key: 'to', label: 'To resource', flag: '--to', hint: 'TYPE/NAME, e.g. deploy/voting',
    check: (v) => v && !/^[^/\s]+\/[^/\s]+$/.test(v) ? `“${v}” is not TYPE/NAME, such as deploy/voting.` : null },
  { key: 'to_namespace', label: 'To namespace', flag: '--to-namespace', hint: 'the target’s by default',
    check: (v) => v && /\s|\//.test(v) ? `“${v}” is not a namespace name.` : null },
  { key: 'method', label: 'Method', flag: '--method', hint: 'GET, POST…',
    check: (v) => v && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? `“${v}” is not an HTTP method.` : null },
  { key: 'path', label: 'Path prefix', flag: '--path', hint: '/api/',
    check: () => null },
  { key: 'authority', label: 'Authority', flag: '--authority', hint: 'web.demo.svc.cluster.local:80',
    check: (v) => v && /\s/.test(v) ? `“${v}” has a space: not an authority.` : null },
  { key: 'max_rps', label: 'Max RPS', flag: '--max-rps', hint: DEFAULT_MAX_RPS, inputmode: 'numeric',
    check: (v) => v && !(/^[0-9]+$/.test(v) && Number(v) >= 1 && Number(v) <= 4294967295)
      ? `“${v}” is not a whole number of requests a second from 1.` : null },
];

/** The fields named, in `FIELDS`' order. */
export function fields(keys) {
  return FIELDS.filter((f) => keys.includes(f.key));
}

/** The filter a hash's query holds: `{ key: value }`, trimmed, empty ones left out. */
export function fromQuery(query, shown) {
  const filter = {};
  for (const f of shown) {
    const v = (query.get(f.key) ?? '').trim();
    if (v) filter[f.key] = v;
  }
  return filter;
}

/** The query (for the API and for the hash) of a filter. */
export function toQuery(filter) {
  const q = new URLSearchParams();
  for (const f of FIELDS) if (filter[f.key]) q.set(f.key, filter[f.key]);
  return q;
}

/** Each wrong field's message: `[[key, message]]`, empty when the filter is fine. */
export function problems(filter, shown) {
  return shown.map((f) => [f.key, f.check(filter[f.key] ?? '')]).filter(([, m]) => m);
}

/** A word for a shell: as it is when it is safe, else single-quoted. */
function quote(word) {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** `mesh VERB TARGET -n NS --to ...`: the command the filter is (`-` fields dropped). */
export function commandLine(verb, filter) {
  const words = ['mesh', verb, quote(filter.resource || 'TYPE/NAME')];
  for (const f of FIELDS) {
    const v = filter[f.key];
    if (!f.flag || !v || (f.key === 'max_rps' && v === DEFAULT_MAX_RPS)) continue;
    words.push(f.flag, quote(v));
  }
  return words.join(' ');
}

/**
 * The form: a labelled input per field (each with its hint and, when wrong, its
 * message, tied by `aria-describedby`), and `buttons`. `onInput(filter)` at each
 * change, `onSubmit(filter)` when submitted with every field right (else the first
 * wrong field gets the focus and each says what is wrong).
 */
export function filterForm({ id, shown, filter, buttons, onInput, onSubmit }) {
  const inputs = new Map();
  const errors = new Map();
  const rows = shown.map((f) => {
    const inputId = `${id}-${f.key}`;
    const input = h('input', {
      id: inputId, name: f.key, type: 'text', value: filter[f.key] ?? '',
      placeholder: f.hint, autocomplete: 'off', spellcheck: 'false',
      inputmode: f.inputmode ?? null, required: f.key === 'resource',
      'aria-describedby': `${inputId}-error`,
    });
    const error = h('span', { id: `${inputId}-error`, class: 'field-error' });
    inputs.set(f.key, input);
    errors.set(f.key, error);
    return h('div', { class: 'field' }, h('label', { for: inputId }, f.label), input, error);
  });
  const read = () => {
    const filter = {};
    for (const [key, input] of inputs) {
      const v = input.value.trim();
      if (v) filter[key] = v;
    }
    return filter;
  };
  const mark = (wrong) => {
    const by = new Map(wrong);
    for (const [key, input] of inputs) {
      const message = by.get(key) ?? '';
      if (errors.get(key).textContent !== message) errors.get(key).textContent = message;
      if (message) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  };
  const form = h('form', {
    id, class: 'filter', novalidate: true, 'aria-label': 'What to tap',
    oninput: () => {
      // A message goes as soon as its field is right; new ones wait for a submit.
      const filter = read();
      const wrong = new Map(problems(filter, shown));
      mark([...errors].filter(([, e]) => e.textContent).map(([k]) => [k, wrong.get(k)]).filter(([, m]) => m));
      onInput(filter);
    },
    onsubmit: (e) => {
      e.preventDefault();
      const filter = read();
      const wrong = problems(filter, shown);
      mark(wrong);
      if (wrong.length) {
        inputs.get(wrong[0][0]).focus();
        return;
      }
      onSubmit(filter);
    },
  }, h('div', { class: 'fields' }, rows), h('div', { class: 'actions' }, buttons));
  return { form, read };
}

/** Puts a filter in the hash without a navigation (the page is not drawn again). */
export function mirror(page, filter) {
  const query = toQuery(filter).toString();
  const hash = `#/${page}${query ? `?${query}` : ''}`;
  if (location.hash !== hash) history.replaceState(history.state, '', hash);
}

/** An API error's words: its JSON `error` when it has one, else its status. */
export async function refusal(rsp) {
  let said = '';
  try {
    const doc = await rsp.json();
    if (typeof doc?.error === 'string') said = doc.error;
  } catch {
    // Not JSON: the status says enough.
  }
  const why = {
    400: 'The controller refused the filter',
    401: 'The controller needs to know who you are (401): sign in, or give a token',
    403: 'You may not tap this namespace (403)',
    404: 'Nothing to tap there (404)',
    503: 'The tap API is unavailable (503)',
  }[rsp.status] ?? `The controller answered ${rsp.status}`;
  return said ? `${why}: ${said}` : `${why}.`;
}
