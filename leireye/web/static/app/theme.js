// The colour theme: dark or light. A choice made with the theme button is kept in localStorage;
// without one the page follows the system's prefers-color-scheme, live.

const KEY = 'leireye.theme';
const THEMES = ['dark', 'light'];

function stored() {
  const value = localStorage.getItem(KEY);
  return THEMES.includes(value) ? value : null;
}

const system = matchMedia('(prefers-color-scheme: light)');

export function currentTheme() {
  return document.documentElement.dataset.theme;
}

function apply(theme) {
  document.documentElement.dataset.theme = theme;
}

// Set the theme at once (before the page is shown); call onChange after every later change.
export function initTheme(onChange = () => {}) {
  apply(stored() ?? (system.matches ? 'light' : 'dark'));
  system.addEventListener('change', () => {
    if (stored() !== null) return;
    apply(system.matches ? 'light' : 'dark');
    onChange(currentTheme());
  });
}

export function toggleTheme() {
  const next = currentTheme() === 'light' ? 'dark' : 'light';
  localStorage.setItem(KEY, next);
  apply(next);
  return next;
}
