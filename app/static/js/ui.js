// Small DOM helpers shared by the tables.

// A table cell (or any element) holding text: server strings never become markup.
export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
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
