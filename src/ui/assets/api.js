// The public HTTP API, as the pages use it. Every error answer is JSON
// `{"error": ..., "field": ...}`; `ApiError` carries both so forms can show the message
// beside the field it names.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `the server answered ${status}`);
    this.status = status;
    this.field = body && body.field;
  }
}

export const enc = encodeURIComponent;

/** Fetches JSON (or text); throws ApiError for a non-2xx answer. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, signal, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Plain-text answers (Chronos's) stay text.
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '');
  return pairs.length ? '?' + new URLSearchParams(pairs).toString() : '';
}

export const jobsPage = (params, signal) => api('/api/jobs' + query(params), { signal });
export const job = (name) => api(`/api/jobs/${enc(name)}`);
export const runs = (name, limit = 100) => api(`/api/jobs/${enc(name)}/runs?limit=${limit}`);
export const nextTargets = (name, n = 10) => api(`/api/jobs/${enc(name)}/next?n=${n}`);
export const waiting = (name) => api(`/api/jobs/${enc(name)}/waiting`);
export const runNow = (name) => api(`/scheduler/job/${enc(name)}`, { method: 'PUT' });
export const kill = (name) => api(`/scheduler/task/kill/${enc(name)}`, { method: 'DELETE' });
export const remove = (name) => api(`/scheduler/job/${enc(name)}`, { method: 'DELETE' });
export const graph = (params) => api('/api/graph' + query(params));
export const shards = () => api('/api/shards');
export const agents = () => api('/api/agents');
export const health = () => api('/health');
export const backfill = (name, body) => api(`/api/jobs/${enc(name)}/backfill`, { method: 'POST', body });
export const backfills = () => api('/api/backfills');
export const cancelBackfill = (id) => api(`/api/backfills/${enc(id)}`, { method: 'DELETE' });
export const preview = (schedule, timeZone, n = 3) =>
  api('/api/schedule/preview' + query({ schedule, timeZone, n }));

/**
 * Creates or replaces a job: on Chronos's dependency endpoint when it has parents, else on
 * the scheduled one (which takes `triggeredBy` jobs too).
 */
export function saveJob(json) {
  const dependent = Array.isArray(json.parents) && json.parents.length > 0;
  const path = dependent ? '/scheduler/dependency' : '/scheduler/iso8601';
  return api(path, { method: 'POST', body: json });
}

/**
 * A slice of a run's stdout or stderr from `offset`. With `follow`, the server holds the
 * request until there is more or the run ends. Answers the text, the offset to ask next and
 * whether the run has finished (nothing more will come).
 */
export async function output(name, taskId, stream, offset, follow, signal) {
  const url = `/api/jobs/${enc(name)}/runs/${enc(taskId)}/${stream}` +
    query({ offset, follow: follow ? 'true' : undefined });
  const response = await fetch(url, { signal });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  return {
    text: await response.text(),
    next: Number(response.headers.get('x-dron-next-offset') || offset),
    finished: response.headers.get('x-dron-run-finished') === 'true',
  };
}
