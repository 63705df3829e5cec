// The dashboard's only way to the daemon: fetch with the bearer token kept in sessionStorage.

const TOKEN_KEY = 'stance-token';

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// Calls /api/v1 + path; resolves to the decoded JSON, or rejects with an ApiError carrying the
// server's one-line message.
export async function call(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${token() ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Fall through: a non-JSON answer is reported below.
  }
  if (!resp.ok) {
    const err = data?.error;
    throw new ApiError(resp.status, err?.kind ?? 'http', err?.message ?? `HTTP ${resp.status}`);
  }
  return data;
}

export const enc = encodeURIComponent;
