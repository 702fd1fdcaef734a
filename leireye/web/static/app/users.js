// User management for ADMIN (/api/users): list, add, change role, set password, remove.
//
// A dialog opened from the top bar. The server decides everything (the last ADMIN cannot be
// demoted or removed, nobody removes themselves, names are unique): its message is shown under
// the list. Removing asks for a second click; a password is typed into the row it belongs to.
// Changing your own password ends your session (every token issued before is revoked).

import { $, h } from './dom.js';

const ROLES = ['VIEWER', 'ANALYST', 'ADMIN'];

function roleSelect(current, label) {
  return h('select', { 'aria-label': label },
    ROLES.map((role) => h('option', { value: role, selected: role === current }, role)));
}

export class UserAdmin {
  #session;
  #me;
  #dialog = $('#users-dialog');
  #list = $('#users-list');
  #error = $('#users-error');
  #form = $('#users-add');

  constructor(session, me) {
    this.#session = session;
    this.#me = me;
    const open = $('#users-open');
    open.hidden = false;
    open.addEventListener('click', () => this.open());
    $('#users-close').addEventListener('click', () => this.#dialog.close());
    this.#form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#add();
    });
  }

  async open() {
    this.#showError('');
    if (!this.#dialog.open) this.#dialog.showModal();
    await this.#reload();
  }

  async #reload() {
    try {
      const { users } = await this.#session.request('GET', '/api/users');
      users.sort((a, b) => a.username.localeCompare(b.username));
      this.#list.replaceChildren(...users.map((user) => this.#row(user)));
      this.#dialog.dataset.users = String(users.length);
    } catch (err) {
      this.#showError(err.message);
    }
  }

  #row(user) {
    const self = user.id === this.#me.id;
    const role = roleSelect(user.role, `Role of ${user.username}`);
    role.addEventListener('change', () => this.#patch(user, { role: role.value }));
    const actions = h('span', { class: 'user-actions' });
    const you = self ? h('span', { class: 'muted' }, ' (you)') : null;
    const row = h('div',
      { class: 'user-row', role: 'row', dataset: { username: user.username, role: user.role } },
      h('span', { class: 'user-cell-name' }, user.username, you),
      role,
      h('span', { class: 'muted small' }, `id ${user.id}`),
      actions);
    this.#idleActions(user, actions, self);
    return row;
  }

  #idleActions(user, actions, self) {
    const password = h('button',
      { type: 'button', class: 'ghost', dataset: { action: 'password' } }, 'Set password…');
    password.addEventListener('click', () => this.#passwordActions(user, actions, self));
    const remove = h('button', {
      type: 'button', class: 'ghost', dataset: { action: 'remove' },
      disabled: self, title: self ? 'You cannot remove yourself' : null,
    }, 'Remove');
    remove.addEventListener('click', () => {
      if (remove.dataset.armed) {
        this.#remove(user);
        return;
      }
      remove.dataset.armed = 'true';
      remove.textContent = `Remove ${user.username}?`;
      remove.className = 'danger';
    });
    actions.replaceChildren(password, remove);
  }

  #passwordActions(user, actions, self) {
    const input = h('input', {
      type: 'password', autocomplete: 'new-password', placeholder: 'new password',
      'aria-label': `New password for ${user.username}`,
    });
    const save = h('button',
      { type: 'button', class: 'primary', dataset: { action: 'save' } }, 'Save');
    const cancel = h('button', { type: 'button', class: 'ghost' }, 'Cancel');
    save.addEventListener('click', () => {
      if (input.value) this.#patch(user, { password: input.value });
    });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && input.value) this.#patch(user, { password: input.value });
    });
    cancel.addEventListener('click', () => this.#idleActions(user, actions, self));
    actions.replaceChildren(input, save, cancel);
    input.focus();
  }

  async #add() {
    const username = $('#users-add-name').value.trim();
    const password = $('#users-add-password').value;
    const body = { username, role: $('#users-add-role').value, password };
    this.#showError('');
    try {
      await this.#session.request('POST', '/api/users', { body });
      this.#form.reset();
      await this.#reload();
    } catch (err) {
      this.#showError(err.message);
    }
  }

  async #patch(user, body) {
    this.#showError('');
    try {
      await this.#session.request('PATCH', `/api/users/${user.id}`, { body });
    } catch (err) {
      this.#showError(err.message);
    }
    await this.#reload(); // also puts back a role the server refused
  }

  async #remove(user) {
    this.#showError('');
    try {
      await this.#session.request('DELETE', `/api/users/${user.id}`);
    } catch (err) {
      this.#showError(err.message);
    }
    await this.#reload();
  }

  #showError(message) {
    this.#error.textContent = message;
  }
}
