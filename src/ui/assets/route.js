// The current route (`#/path?query`), shared by the router and the pages.

/** `#/job/a%20b?run=x` → {path: '/job/a%20b', params: URLSearchParams} */
export function currentRoute() {
  const hash = location.hash.replace(/^#/, '') || '/jobs';
  const [path, search = ''] = hash.split('?');
  return { path, params: new URLSearchParams(search) };
}

/** Records the page's state in its URL (to share or reload it) without re-routing, and without
 * a history entry per keystroke. */
export function setParams(params) {
  const { path } = currentRoute();
  const search = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''),
  ).toString();
  const hash = `#${path}${search ? '?' + search : ''}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}
