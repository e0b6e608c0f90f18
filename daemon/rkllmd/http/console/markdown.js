// A small, safe markdown renderer: it builds DOM nodes and puts every piece of the
// model's text in as text, so nothing the model writes can become markup.
// Supported: fenced code, headings, lists, block quotes, paragraphs, `code`,
// **bold**, *emphasis* and [links](https://...) to http(s) addresses only.

import { h } from './dom.js';

const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\([^)\s]+\))/;

export function inline(text) {
  const out = [];
  let rest = text;
  for (;;) {
    const m = INLINE.exec(rest);
    if (!m) break;
    if (m.index) out.push(rest.slice(0, m.index));
    const token = m[0];
    if (m[1]) out.push(h('code', {}, token.slice(1, -1)));
    else if (m[2]) out.push(h('strong', {}, inline(token.slice(2, -2))));
    else if (m[3]) out.push(h('em', {}, inline(token.slice(1, -1))));
    else {
      const split = token.indexOf('](');
      const label = token.slice(1, split);
      const href = token.slice(split + 2, -1);
      out.push(/^https?:\/\//i.test(href) ? h('a', { href, rel: 'noopener noreferrer', target: '_blank' }, label) : token);
    }
    rest = rest.slice(m.index + token.length);
  }
  if (rest) out.push(rest);
  return out;
}

export function markdown(text) {
  const root = h('div', { class: 'md' });
  const lines = text.split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^```/.test(line)) {
      const body = [];
      i += 1;
      while (i < lines.length && !/^```/.test(lines[i])) { body.push(lines[i]); i += 1; }
      i += 1;
      root.append(h('pre', {}, h('code', {}, body.join('\n'))));
    } else if (/^#{1,6}\s/.test(line)) {
      const level = Math.min(6, line.match(/^#+/)[0].length + 2);
      root.append(h(`h${level}`, {}, inline(line.replace(/^#+\s*/, ''))));
      i += 1;
    } else if (/^\s*([-*+]|\d+[.)])\s/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = h(ordered ? 'ol' : 'ul');
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s/.test(lines[i])) {
        list.append(h('li', {}, inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ''))));
        i += 1;
      }
      root.append(list);
    } else if (/^>\s?/.test(line)) {
      const quoted = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) { quoted.push(lines[i].replace(/^>\s?/, '')); i += 1; }
      root.append(h('blockquote', {}, inline(quoted.join(' '))));
    } else if (!line.trim()) {
      i += 1;
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^(```|#{1,6}\s|>|\s*([-*+]|\d+[.)])\s)/.test(lines[i])) {
        para.push(lines[i]);
        i += 1;
      }
      const p = h('p');
      para.forEach((l, n) => { if (n) p.append(h('br')); p.append(...inline(l)); });
      root.append(p);
    }
  }
  return root;
}

// Reasoning the model wrote inside <think>...</think> (or sent as reasoning_content)
// is split from the answer so the view can fold it.
export function splitReasoning(text) {
  const open = text.indexOf('<think>');
  if (open < 0) return { reasoning: '', answer: text };
  const close = text.indexOf('</think>', open);
  if (close < 0) return { reasoning: text.slice(open + 7), answer: text.slice(0, open) };
  return { reasoning: text.slice(open + 7, close), answer: text.slice(0, open) + text.slice(close + 8) };
}
