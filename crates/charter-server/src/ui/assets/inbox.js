// Charter's one script: progressive enhancement of the server-rendered pages.
// Every page works without it. It adds:
//  - live counts: what waits in the inbox, in the navigation and the tab title, polled
//    from /inbox/counts every few seconds; on the inbox's first page, the list refreshes
//    when its tab's count changes;
//  - keyboard shortcuts on the inbox: j/k next/previous item, a approve (or retry),
//    r reject (or dismiss), e edit then approve, d decide. Keys typed into a field are
//    left alone;
//  - edit-then-approve: while the parameters are edited, the lines removed from and added
//    to the proposal (the same rule as the server's diff after a failed edit).
(function () {
  'use strict';
  var POLL_MS = 3000;
  var baseTitle = document.title;
  var list = document.querySelector('section.list');

  function rows() {
    return list ? Array.prototype.slice.call(list.querySelectorAll('tr[data-item]')) : [];
  }

  function selectedIndex(all) {
    for (var i = 0; i < all.length; i++) {
      if (all[i].classList.contains('selected')) { return i; }
    }
    return -1;
  }

  function open(i) {
    var all = rows();
    if (i < 0 || i >= all.length) { return; }
    var a = all[i].querySelector('a');
    if (a) { window.location.href = a.href; }
  }

  function focusAction(key) {
    var detail = document.getElementById('detail');
    if (!detail) { return; }
    var target = detail.querySelector('[data-key="' + key + '"]');
    if (!target) { return; }
    if (target.tagName === 'DETAILS') {
      target.open = true;
      var area = target.querySelector('textarea');
      if (area) { area.focus(); }
      return;
    }
    var field = key === 'a' ? null : target.querySelector('input[type=text], select, textarea');
    var button = target.querySelector('button');
    (field || button).focus();
  }

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || !list) { return; }
    var t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) {
      return;
    }
    var all = rows();
    var i = selectedIndex(all);
    switch (e.key) {
      case 'j': open(i < 0 ? 0 : i + 1); break;
      case 'k': open(i - 1); break;
      case 'a': case 'r': case 'e': case 'd': focusAction(e.key); break;
      default: return;
    }
    e.preventDefault();
  });

  var last = null;

  function refreshList() {
    fetch(window.location.href, { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || !list) { return; }
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.querySelector('section.list');
        if (fresh) { list.innerHTML = fresh.innerHTML; }
      })
      .catch(function () {});
  }

  function show(c) {
    var nav = document.querySelector('[data-nav-count]');
    if (nav) { nav.textContent = c.total > 0 ? String(c.total) : ''; }
    document.title = (c.total > 0 ? '(' + c.total + ') ' : '') + baseTitle;
    ['approvals', 'decisions', 'dead'].forEach(function (k) {
      var el = document.querySelector('.tabs [data-count="' + k + '"]');
      if (el && el.dataset.scoped !== 'true') { el.textContent = String(c[k]); }
    });
    if (list && last && window.location.search.indexOf('cursor=') < 0) {
      var tab = list.getAttribute('data-tab');
      if (c[tab] !== last[tab]) { refreshList(); }
    }
    last = c;
  }

  function poll() {
    if (document.visibilityState === 'hidden') { return; }
    fetch('/inbox/counts', { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (c) { if (c) { show(c); } })
      .catch(function () {});
  }

  function liveDiff(area) {
    var box = area.form && area.form.querySelector('[data-live-diff]');
    if (!box) { return; }
    var old = area.getAttribute('data-proposal').split('\n');
    var now = area.value.split('\n');
    var pre = document.createElement('pre');
    var changed = false;
    function line(tag, sign, text) {
      var el = document.createElement(tag);
      el.textContent = sign + ' ' + text;
      pre.appendChild(el);
      pre.appendChild(document.createTextNode('\n'));
      changed = true;
    }
    old.forEach(function (l) { if (now.indexOf(l) < 0) { line('del', '-', l); } });
    now.forEach(function (l) { if (old.indexOf(l) < 0) { line('ins', '+', l); } });
    var head = document.createElement('h3');
    head.textContent = 'Your edit against the proposal';
    box.textContent = '';
    box.appendChild(head);
    if (!changed) { pre.textContent = 'no change'; }
    box.appendChild(pre);
    box.hidden = false;
  }

  document.addEventListener('input', function (e) {
    var t = e.target;
    if (t && t.tagName === 'TEXTAREA' && t.hasAttribute('data-proposal')) { liveDiff(t); }
  });

  poll();
  window.setInterval(poll, POLL_MS);
}());
