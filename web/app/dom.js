// A small element builder: no innerHTML, so nothing the API answers is ever parsed as
// markup, and no inline styles (the server's CSP forbids them).

/**
 * `h('td', { class: 'num', dataset: { key: 'rps' } }, 'text', child)`: attributes
 * (`class`, `dataset`, `on*` listeners, others as attributes), then children
 * (strings become text nodes; null and false are skipped).
 */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** `h` for SVG elements (`svg('rect', { x: 1 })`), in the SVG namespace. */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === 'class') el.setAttribute('class', value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/**
 * A `mesh` command, ready to copy: the command's text and a copy button. A page whose
 * command follows a form changes it with `setCommand`.
 */
export function command(text) {
  const code = h('code', { class: 'command-text' }, text);
  const said = h('span', { class: 'copied', role: 'status' });
  const copy = async () => {
    const text = code.textContent;
    try {
      await navigator.clipboard.writeText(text);
      said.textContent = 'Copied';
    } catch {
      // No clipboard (an insecure origin, or refused): select it for the user.
      getSelection().selectAllChildren(code);
      said.textContent = 'Selected: press Ctrl+C to copy';
    }
  };
  return h('p', { class: 'command' },
    h('span', { class: 'command-label' }, 'The same from a terminal: '),
    code,
    h('button', { type: 'button', class: 'copy', onclick: copy,
                  'aria-label': `Copy the command ${text}` }, 'Copy'),
    said);
}

/** Changes the text of a `command(...)`'s element (what its button copies too). */
export function setCommand(p, text) {
  const code = p.querySelector('.command-text');
  if (code.textContent === text) return;
  code.textContent = text;
  p.querySelector('.copy').setAttribute('aria-label', `Copy the command ${text}`);
  p.querySelector('.copied').textContent = '';
}
