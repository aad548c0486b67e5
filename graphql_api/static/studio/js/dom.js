// DOM building and the formats the studio shows values in (money, tokens, instants).

/** An element with properties, attributes, listeners (`onclick`...) and children (nodes, strings, arrays). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "testid") el.dataset.testid = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** "$0.0126" from an exact decimal string; the exact value goes in a tooltip. */
export function money(decimal) {
  if (decimal === null || decimal === undefined) return h("span", { class: "muted" }, "—");
  const n = Number(decimal);
  const shown = n === 0 ? "0.00" : n >= 1 ? n.toFixed(2) : n.toPrecision(3);
  return h("span", { class: "money", title: `$${decimal} exactly` }, `$${shown}`);
}

export function count(n) {
  return new Intl.NumberFormat("en").format(n ?? 0);
}

/** "2026-11-20 11:58 UTC" from an ISO instant. */
export function instant(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** A value of an analysis result as text: booleans as yes/no, lists joined, empty as a dash. */
export function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (value === true) return "yes";
  if (value === false) return "no";
  if (Array.isArray(value)) return value.map(show).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Random hex, also outside secure contexts (where crypto.randomUUID is missing). */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
