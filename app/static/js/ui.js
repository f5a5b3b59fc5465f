// Small DOM helpers shared by the tables.

// A table cell (or any element) holding text: server strings never become markup.
export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// The one row of an empty table, saying why it is empty and what to do.
export function emptyRow(columns, text) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = el("td", text, "muted");
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

// A button that runs `action` once per click (disabled meanwhile); a failure goes to
// `onError(text, error)` and enables it again, success calls `onDone()`.
export function actionButton(label, className, what, action, onError, onDone) {
  const button = el("button", label, className);
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
      onError("");
      onDone();
    } catch (e) {
      onError(`${what} failed: ${e.message}`, e);
      button.disabled = false;
    }
  });
  return button;
}
