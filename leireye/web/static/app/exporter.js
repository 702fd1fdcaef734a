// Export the packets matching the current filter (/api/export/packets, ANALYST and ADMIN),
// of a time range when `range` is given ({from, to}: Unix seconds; read from the packet store).
// A plain link cannot carry the bearer token, so the console buys a single-use ticket
// (POST /api/auth/ticket) and hands the browser a link with it: the browser streams the file to
// disk as it arrives, whatever its size (no Blob in memory).

import { queryString } from './api.js';

export async function exportPackets(session, format, filters, range = null) {
  const { ticket } = await session.request('POST', '/api/auth/ticket');
  const path = `/api/export/packets${queryString({ format, ...filters, ...(range ?? {}), ticket })}`;
  const link = document.createElement('a');
  link.href = path;
  link.download = '';
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  return { path };
}
