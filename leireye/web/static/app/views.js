// The console's views, named by the page address' fragment so that Back and Forward work and
// a view can be linked: #/packets (the default), #/flows, #/hosts, #/host/<ip>, #/protocols.
// And what "the packets of a conversation" means for the packet view.

const VIEWS = new Set(['packets', 'flows', 'hosts', 'protocols']);
const PORTED = new Set(['TCP', 'UDP', 'SCTP']);

export function parseRoute(hash) {
  const parts = String(hash ?? '').replace(/^#\/?/, '').split('/');
  if (parts[0] === 'host' && parts[1]) return { name: 'host', ip: decodeURIComponent(parts[1]) };
  return { name: VIEWS.has(parts[0]) ? parts[0] : 'packets', ip: null };
}

// The subscription filter for a flow's packets: the transport, the responder's address at
// either end and the originator's port at either end (the filter grammar has no "this pair of
// ends"); matchesFlow then keeps exactly the flow's 5-tuple, both ways.
export function flowPacketFilter(flow) {
  const filters = { protocol: flow.transport, ip: flow.resp_ip };
  if (PORTED.has(flow.transport) && flow.orig_port !== null && flow.orig_port !== undefined) {
    filters.port = flow.orig_port;
  }
  return filters;
}

export function matchesFlow(p, flow) {
  const ported = PORTED.has(flow.transport);
  const forward = p.src_ip === flow.orig_ip && p.dst_ip === flow.resp_ip
    && (!ported || (p.src_port === flow.orig_port && p.dst_port === flow.resp_port));
  const back = p.src_ip === flow.resp_ip && p.dst_ip === flow.orig_ip
    && (!ported || (p.src_port === flow.resp_port && p.dst_port === flow.orig_port));
  return forward || back;
}
