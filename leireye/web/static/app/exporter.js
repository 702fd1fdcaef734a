// Export the packets matching the current filter (/api/export/packets, ANALYST and ADMIN).
// A plain link cannot carry the bearer token, so the file is fetched and saved from a Blob.

import { queryString } from './api.js';

export async function exportPackets(session, format, filters) {
  const path = `/api/export/packets${queryString({ format, ...filters })}`;
  const response = await session.request('GET', path, { raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get('Content-Disposition') ?? '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? `leireye-export.${format}`;
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return { name, size: blob.size };
}
