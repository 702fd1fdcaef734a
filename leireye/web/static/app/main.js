// The LeirEye console: log in, then wire the live stream to the table, charts and panels.

import { $ } from './dom.js';
import { Session, hasRole, queryString } from './api.js';
import { CaptureConnection } from './connection.js';
import { PacketStore, PauseBuffer } from './store.js';
import { PacketTable } from './table.js';
import { FilterBar } from './filters.js';
import { DetailPane } from './detail.js';
import { RateCharts } from './charts.js';
import { ProtocolBars, TopTalkers } from './panels.js';
import { StatusView } from './status.js';
import { CaptureControl } from './capture.js';
import { UserAdmin } from './users.js';
import { exportPackets } from './exporter.js';
import { count, dateTime } from './format.js';
import { PresetControl } from './presets.js';
import { currentTheme, initTheme, toggleTheme } from './theme.js';
import { NameCache } from './names.js';
import { FlowsView } from './flows.js';
import { HostPage, HostsView } from './hosts.js';
import { ProtocolsView } from './protocols.js';
import { parseRoute, flowPacketFilter, matchesFlow } from './views.js';
import { SensorsPanel, fillSelector, markCentral, ratesFor } from './fleet.js';

const KEEP_ROWS = 5000; // packets kept in the page (and in the pause buffer)
const BACKFILL = 500; // recent packets shown at once when a filter is applied (and per "load older")
const TOP_EVERY_MS = 5000;
const SENSORS_EVERY_MS = 5000; // at a central: status comes when a sensor changes state only
const NOTICE_KEY = 'leireye.notice';

const session = new Session();
let onTheme = () => {}; // the console's charts restyle themselves once it runs
initTheme((theme) => onTheme(theme));

function showLogin(notice = '') {
  $('#console').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = notice;
  $('#login-error').classList.toggle('notice', Boolean(notice));
  $('#login-host').textContent = `Sensor at ${location.host}`;
  $('#login-username').focus();
}

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const username = $('#login-username').value.trim();
  const password = $('#login-password').value;
  const error = $('#login-error');
  if (!username || !password) {
    error.textContent = 'Enter your username and password.';
    return;
  }
  const button = $('#login-submit');
  button.disabled = true;
  error.textContent = '';
  error.classList.remove('notice');
  try {
    const user = await session.login(username, password);
    $('#login-password').value = '';
    startConsole(user);
  } catch (err) {
    error.textContent = err.status === 401 ? 'Wrong username or password.' : err.message;
  } finally {
    button.disabled = false;
  }
});

session.on('logout', (reason) => {
  const notice = reason === 'signed out' ? 'You are signed out.' : 'Your session ended: sign in again.';
  sessionStorage.setItem(NOTICE_KEY, notice);
  location.reload(); // drops every timer, socket and packet of the old session at once
});

function startConsole(user) {
  $('#login').hidden = true;
  $('#console').hidden = false;
  $('#user-name').textContent = user.username;
  $('#user-role').textContent = user.role;
  $('#user-role').dataset.role = user.role;
  $('#export').hidden = !hasRole(user, 'ANALYST');
  document.title = `LeirEye · ${location.host}`;

  const names = new NameCache(session);
  const store = new PacketStore(KEEP_ROWS);
  const paused = new PauseBuffer(KEEP_ROWS);
  const status = new StatusView();
  const conn = new CaptureConnection({ session });
  const table = new PacketTable({ viewport: $('#packet-viewport'), store, names });
  const detail = new DetailPane({ root: $('#detail'), session, onClose: closeDetail });
  const charts = new RateCharts({
    ppsEl: $('#chart-pps'), bpsEl: $('#chart-bps'),
    ppsReadout: $('#chart-pps-now'), bpsReadout: $('#chart-bps-now'),
  });
  const protocols = new ProtocolBars($('#protocols'));
  const filterBar = new FilterBar($('#filter-bar'), (filters) => applyFilters(filters));
  const openHost = (ip) => {
    location.hash = `#/host/${encodeURIComponent(ip)}`;
  };
  const flowsView = new FlowsView({
    session, names, table: $('#flows-table'), search: $('#flows-search'),
    message: $('#flows-message'), countEl: $('#flows-count'), onFlow: showFlowPackets, onAddress: openHost,
  });
  const hostsView = new HostsView({
    session, names, table: $('#hosts-table'), search: $('#hosts-search'),
    message: $('#hosts-message'), countEl: $('#hosts-count'), onHost: openHost,
  });
  const hostPage = new HostPage({
    session, names, root: $('#view-host'), onAddress: openHost,
    onPackets: (ip) => {
      location.hash = '#/packets';
      applyFilters({ ip });
    },
  });
  const protocolsView = new ProtocolsView({ session, root: $('#view-protocols') });
  const pages = { flows: flowsView, hosts: hostsView, protocols: protocolsView };
  let view = 'packets';
  let flow = null; // the conversation whose packets the table shows (narrowed exactly), or null
  new PresetControl($('#presets'), {
    read: () => filterBar.read(),
    apply: (filters) => {
      filterBar.show(filters);
      applyFilters(filterBar.read());
    },
  });
  const top = new TopTalkers({
    el: $('#top'), windowEl: $('#top-window'), tabs: $('.tabs'), onPick: pickTalker, names,
  });
  const capture = hasRole(user, 'ADMIN') ? new CaptureControl(session, onStatus) : null;
  // At a fleet central (status `central: true`): the sensor selector, column and panel.
  const sensors = new SensorsPanel({
    list: $('#sensors'), summary: $('#sensors-summary'),
    onPick: (name) => {
      location.hash = '#/packets';
      filterBar.set('sensor', name);
      applyFilters(filterBar.read());
    },
  });
  if (hasRole(user, 'ADMIN')) new UserAdmin(session, user);
  let received = 0;
  let isPaused = false;
  let olderBefore = null; // `before` for the next "load older" (null: no older match in the ring)
  let earlier = 0; // packets of the refill and the "load older" pages in the table
  // While the table shows a past time range from the packet store: {from, to, nextAfter}
  // (Unix seconds; the `after` of the next page, null at the end). Live packets are not shown.
  let history = null;

  function onStatus(data) {
    status.status(data);
    capture?.status(data);
    onSensors(data);
  }

  // A status, or GET /api/sensors (the same `central` and `sensors`, read every
  // SENSORS_EVERY_MS at a central for fresh counters): the fleet's parts of the page.
  function onSensors(data) {
    const fleet = { root: $('#console'), field: $('.field[data-field="sensor"]'), panel: $('#sensors-card') };
    if (markCentral(fleet, data) && Array.isArray(data.sensors)) {
      fillSelector($('#f-sensor'), data.sensors);
      sensors.status(data);
    }
  }

  async function refreshSensors() {
    if (document.hidden || !$('#console').classList.contains('central')) return; // a lone sensor: never
    try {
      onSensors(await session.request('GET', '/api/sensors'));
    } catch (err) {
      console.warn('sensors', err);
    }
  }

  function message(text, kind = '') {
    const el = $('#filter-message');
    el.textContent = text;
    el.title = text;
    el.dataset.kind = kind;
  }

  conn.on('packets', (all) => {
    if (history) return; // the table shows the past; Live brings it back
    const list = flow ? all.filter((p) => matchesFlow(p, flow)) : all;
    received += list.length;
    if (isPaused) {
      paused.push(list);
      status.skipped(paused.skipped);
      updatePauseButton();
    } else {
      store.push(list);
    }
    table.invalidate();
  });
  conn.on('stats', (data) => {
    status.stats(data, ratesFor(data, conn.filters.sensor));
    sensors.stats(data);
    charts.addStats(data);
    protocols.addStats(data);
  });
  conn.on('status', onStatus);
  conn.on('dropped', ({ count: n }) => status.dropped(n));
  conn.on('state', (state) => status.connection(state));
  conn.on('subscribed', ({ filters }) => status.filters(filters));
  conn.on('error', (error) => message(error.message ?? error.code, 'error'));
  session.on('token', () => {
    const root = $('#console');
    root.dataset.renewals = String(Number(root.dataset.renewals ?? 0) + 1);
  });
  table.on('drawn', ({ rows, following, sorted }) => {
    status.rows(rows, received);
    const jump = $('#jump-live');
    jump.hidden = following || rows === 0;
    jump.classList.toggle('bottom', table.order === 'follow' && !sorted);
    if (sorted) jump.textContent = '↑ Back to top';
    else jump.textContent = table.order === 'newest' ? '↑ Back to newest' : '↓ Follow the tail';
  });
  $('#jump-live').addEventListener('click', () => table.follow());
  table.on('select', (packet) => {
    if (!packet) {
      closeDetail();
      return;
    }
    detail.show(packet);
    for (const el of $('#detail-title').querySelectorAll('.addr[data-ip]')) {
      names.fill(el, el.dataset.ip, el.dataset.port === undefined ? null : el.dataset.port);
    }
  });
  table.on('address', openHost);
  $('#detail-title').addEventListener('click', (event) => {
    const address = event.target.closest('.addr[data-ip]');
    if (address?.dataset.ip) openHost(address.dataset.ip);
  });
  names.on('change', () => table.invalidate());

  // The view named by the address' #fragment (views.js): one shown, the others stopped.
  function route() {
    const { name, ip } = parseRoute(location.hash);
    view = name;
    const filters = name === 'packets' || name === 'flows';
    $('#console').classList.toggle('no-filters', !filters);
    $('#console').dataset.view = name;
    $('#filter-bar').hidden = !filters;
    $('.workspace').hidden = name !== 'packets';
    for (const id of ['flows', 'hosts', 'host', 'protocols']) $(`#view-${id}`).hidden = name !== id;
    for (const link of $('#views').querySelectorAll('a')) {
      const current = link.dataset.view === (name === 'host' ? 'hosts' : name);
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    for (const [key, page] of Object.entries(pages)) {
      if (key === name) page.show();
      else if (page.shown) page.hide();
    }
    if (name === 'host') hostPage.show(ip);
    else if (hostPage.shown) hostPage.hide();
    if (name === 'packets') table.invalidate();
  }
  window.addEventListener('hashchange', route);

  function showFlowPackets(picked) {
    location.hash = '#/packets';
    applyFilters(flowPacketFilter(picked), picked);
  }

  async function applyFilters(filters, ofFlow = null) {
    filterBar.clearErrors();
    message('Applying…');
    let backfill = null;
    try {
      backfill = await session.request('GET',
        `/api/capture/packets${queryString({ ...filters, limit: BACKFILL })}`);
    } catch {
      backfill = null; // the subscription below reports what is wrong, naming the field
    }
    let applied;
    try {
      applied = await conn.subscribe(filters, backfill?.newest_id ?? null);
    } catch (err) {
      if (err.code === 'superseded' || err.code === 'closed') return;
      message(filterBar.showError(err.field, err.message) ? '' : err.message, 'error');
      return;
    }
    store.clear();
    paused.drain();
    flow = ofFlow;
    flowsView.setFilters(applied);
    if (history) {
      filterBar.show(applied);
      history.nextAfter = null;
      await loadHistory(history);
      return;
    }
    if (backfill) {
      const packets = flow ? backfill.packets.filter((p) => matchesFlow(p, flow)) : backfill.packets;
      store.push(packets.slice().reverse());
      received += packets.length;
    }
    // A packet the new filter leaves out is no longer shown in the detail pane.
    if (detail.open && store.indexOfId(detail.packetId) < 0) closeDetail();
    const any = Object.keys(applied).length > 0;
    table.emptyText = any ? 'No packet matches this filter yet.' : 'Waiting for packets…';
    table.reset();
    filterBar.show(applied);
    olderBefore = backfill?.next_before ?? null;
    earlier = backfill?.packets.length ?? 0;
    showTableNote(any);
    if (flow) {
      const end = (ip, port) => (port === null || port === undefined ? ip : `${ip}:${port}`);
      message(`Flow ${end(flow.orig_ip, flow.orig_port)} ↔ ${end(flow.resp_ip, flow.resp_port)}`);
      $('#filter-message').title = `The packets of this conversation (${flow.transport}, both ways) still in the ring; Apply or Clear to leave it`;
    }
    else if (applied.ip) message(`Packets to or from ${applied.ip}`);
    else message(any ? `Filter applied · ${count(backfill?.count ?? 0)} recent matches` : '');
  }

  // Under the table: when the refill stopped at BACKFILL, say so and offer the older ones.
  function showTableNote(any = Object.keys(conn.filters).length > 0) {
    const what = any ? 'matches' : 'packets';
    const note = $('#table-note');
    const button = $('#load-older');
    const full = store.length >= store.capacity;
    note.hidden = olderBefore === null && earlier <= BACKFILL;
    button.hidden = olderBefore === null || full;
    button.textContent = `Load ${count(BACKFILL)} older`;
    let text;
    const before = any ? 'from before this filter' : 'from before you opened the console';
    if (olderBefore === null) {
      text = `All ${count(earlier)} ${what} ${before} still in the ring are shown.`;
    } else if (full) {
      text = `The table keeps the ${count(store.capacity)} most recent ${what}; `
        + 'older ones: export, or narrow the filter.';
    } else {
      text = `Showing the ${count(earlier)} most recent ${what} ${before}, then new ones live; `
        + 'older ones: load them, export, or narrow the filter.';
    }
    $('#table-note-text').textContent = text;
  }

  // History: a past time range from the packet store, the same filters, oldest first, in
  // pages of BACKFILL (GET /api/capture/packets?from&to&after); Live returns to the stream.
  function inputSeconds(el) {
    const ms = new Date(el.value).getTime();
    return Number.isFinite(ms) ? ms / 1000 : null;
  }

  async function showHistory() {
    const from = inputSeconds($('#history-from'));
    const to = inputSeconds($('#history-to'));
    if (from === null || to === null || to < from) {
      message('Choose a time range: From before To', 'error');
      return;
    }
    history = { from, to, nextAfter: null };
    $('#console').dataset.mode = 'history';
    $('#history-live').hidden = false;
    if (isPaused) togglePause();
    closeDetail();
    store.clear();
    paused.drain();
    table.emptyText = 'No packet of this time range matches.';
    table.reset();
    await loadHistory(history);
  }

  async function loadHistory(range) {
    const first = range.nextAfter === null; // a first page replaces the table
    const query = { ...conn.filters, from: range.from, to: range.to, limit: BACKFILL,
      after: range.nextAfter };
    let page;
    try {
      page = await session.request('GET', `/api/capture/packets${queryString(query)}`);
    } catch (err) {
      message(`Could not read the packet store: ${err.message}`, 'error');
      return;
    }
    if (history !== range) return; // Live, or another range meanwhile
    if (first) store.clear();
    store.push(page.packets);
    range.nextAfter = page.next_after ?? null;
    table.invalidate();
    const when = (s) => dateTime(new Date(s * 1000).toISOString());
    const cut = page.past_retention
      ? ` The store begins at ${page.store_oldest ? dateTime(page.store_oldest) : '(nothing stored)'}: the start of the range is gone.`
      : '';
    message(`History ${when(range.from)} – ${when(range.to)} · ${count(store.length)} packets from the packet store`);
    $('#table-note').hidden = false;
    $('#table-note-text').textContent = (range.nextAfter === null
      ? `All ${count(store.length)} packets of this range are shown.`
      : `The first ${count(store.length)} packets of this range are shown.`) + cut;
    const button = $('#load-older');
    button.hidden = range.nextAfter === null || store.length >= store.capacity;
    button.textContent = `Load ${count(BACKFILL)} more`;
  }

  function showLive() {
    history = null;
    delete $('#console').dataset.mode;
    $('#history-live').hidden = true;
    applyFilters(conn.filters);
  }

  async function loadOlder() {
    if (history) {
      if (history.nextAfter !== null) await loadHistory(history);
      return;
    }
    if (olderBefore === null) return;
    const button = $('#load-older');
    button.disabled = true;
    const filters = conn.filters;
    try {
      const page = await session.request('GET',
        `/api/capture/packets${queryString({ ...filters, limit: BACKFILL, before: olderBefore })}`);
      if (filters !== conn.filters) return; // another filter meanwhile
      const taken = store.pushOlder(page.packets);
      received += taken;
      earlier += taken;
      olderBefore = page.next_before ?? null;
      table.invalidate();
      showTableNote();
    } catch (err) {
      message(`Could not load older packets: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  function pickTalker(tab, entry) {
    if (tab === 'sources') filterBar.set('src_ip', entry.address);
    else if (tab === 'destinations') filterBar.set('dst_ip', entry.address);
    else {
      filterBar.set('protocol', entry.protocol);
      filterBar.set('port', entry.port);
    }
    applyFilters(filterBar.read());
  }

  function closeDetail() {
    detail.close();
    table.selectedId = null;
    table.invalidate();
  }

  function updatePauseButton() {
    const button = $('#pause');
    button.setAttribute('aria-pressed', String(isPaused));
    button.textContent = isPaused ? `Resume · ${count(paused.items.length)} new` : 'Pause';
  }

  function togglePause() {
    isPaused = !isPaused;
    if (!isPaused) store.push(paused.drain());
    updatePauseButton();
    table.invalidate();
  }

  // The button names what a click does (like Pause / Resume), its title what is shown now.
  function toggleOrder() {
    const order = table.order === 'newest' ? 'follow' : 'newest';
    table.setOrder(order);
    const button = $('#order');
    button.textContent = order === 'newest' ? 'Oldest on top' : 'Newest on top';
    button.title = order === 'newest'
      ? 'Newest packets are on top: click to put the oldest on top and follow the tail'
      : 'Oldest packets are on top, following the tail: click to put the newest on top';
  }

  function updateThemeButton() {
    const light = currentTheme() === 'light';
    const button = $('#theme-toggle');
    button.textContent = light ? 'Dark theme' : 'Light theme';
    button.title = `Switch to the ${light ? 'dark' : 'light'} theme (remembered in this browser)`;
  }
  onTheme = () => {
    updateThemeButton();
    charts.restyle();
    hostPage.restyle();
    protocolsView.restyle();
  };

  async function doExport() {
    const format = $('#export-format').value;
    const button = $('#export-button');
    button.disabled = true;
    message(`Exporting ${format}…`);
    try {
      const range = history ? { from: history.from, to: history.to } : null;
      await exportPackets(session, format, conn.filters, range);
      message(`Downloading the ${format} export: the browser saves it as it arrives`);
    } catch (err) {
      message(`Export failed: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function refreshTop() {
    if (document.hidden) return;
    try {
      top.update(await session.request('GET', '/api/stats/top'));
    } catch (err) {
      console.warn('top talkers', err);
    }
  }

  $('#pause').addEventListener('click', togglePause);
  $('#order').addEventListener('click', toggleOrder);
  $('#load-older').addEventListener('click', loadOlder);
  $('#history-show').addEventListener('click', showHistory);
  $('#history-live').addEventListener('click', showLive);
  $('#theme-toggle').addEventListener('click', () => {
    toggleTheme();
    onTheme();
  });
  $('#chart-scale').addEventListener('change', (event) => {
    charts.scale = event.target.value;
  });
  $('#export-button').addEventListener('click', doExport);
  $('#logout').addEventListener('click', () => session.logout());
  document.addEventListener('keydown', (event) => {
    const typing = event.target.closest?.('input, select, textarea');
    if (event.key === 'Escape') {
      if (typing) event.target.blur();
      else closeDetail();
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey || view !== 'packets') return;
    if (event.key === ' ' && !event.target.closest('button')) {
      event.preventDefault();
      togglePause();
    } else if (event.key === '/') {
      event.preventDefault();
      filterBar.focus();
    } else if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      table.moveSelection(event.key === 'ArrowDown' ? 1 : -1);
    }
  });

  updateThemeButton();
  names.start();
  route();
  conn.start();
  applyFilters({});
  session.request('GET', '/api/capture/status').then(onStatus, (err) => console.warn(err));
  charts.loadHistory(session).catch((err) => console.warn('timeline', err));
  capture?.load();
  refreshTop();
  setInterval(refreshTop, TOP_EVERY_MS);
  setInterval(refreshSensors, SENSORS_EVERY_MS);
  status.filters({});
}

async function boot() {
  const notice = sessionStorage.getItem(NOTICE_KEY) ?? '';
  sessionStorage.removeItem(NOTICE_KEY);
  if (session.canResume) {
    try {
      startConsole(await session.resume());
      return;
    } catch (err) {
      console.warn('could not resume the session', err);
    }
  }
  showLogin(notice);
}

boot();
