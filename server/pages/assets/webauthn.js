// Portcullis: the WebAuthn prompt of the hosted pages (the login page's second
// step and /account/security). A button[data-webauthn] holds the ceremony's
// options as JSON ({"publicKey": {...}}, binary members base64url). Pressing it
// asks the browser for a passkey (navigator.credentials.get, or .create to
// register one), writes the result as JSON into the form's webauthn_response
// field and submits the form, which carries its CSRF token. No build, no
// dependencies; served by Portcullis under script-src 'self'.
(function () {
  'use strict';

  function toBytes(s) {
    var b64 = s.replace(/-/g, '+').replace(/_/g, '/');
    var bin = atob(b64 + '==='.slice((b64.length + 3) % 4));
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toText(buf) {
    if (!buf) return undefined;
    var bytes = new Uint8Array(buf), bin = '';
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function decodeList(list) {
    (list || []).forEach(function (c) { c.id = toBytes(c.id); });
  }

  function encode(cred) {
    var r = cred.response;
    var out = {
      id: cred.id, rawId: toText(cred.rawId), type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: toText(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = toText(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = toText(r.authenticatorData);
      out.response.signature = toText(r.signature);
      out.response.userHandle = toText(r.userHandle);
    }
    return out;
  }

  function ceremony(button) {
    var opts = JSON.parse(button.getAttribute('data-options'));
    var pk = opts.publicKey || opts;
    pk.challenge = toBytes(pk.challenge);
    if (button.getAttribute('data-webauthn') === 'create') {
      pk.user.id = toBytes(pk.user.id);
      decodeList(pk.excludeCredentials);
      return navigator.credentials.create({ publicKey: pk });
    }
    decodeList(pk.allowCredentials);
    return navigator.credentials.get({ publicKey: pk });
  }

  function start(button) {
    var status = document.getElementById('webauthn-status');
    button.disabled = true;
    if (status) status.textContent = 'Follow the instructions of your browser or security key.';
    ceremony(button).then(function (cred) {
      if (!cred) throw new Error('no credential');
      var form = button.form;
      form.elements.namedItem('webauthn_response').value = JSON.stringify(encode(cred));
      form.submit();
    }).catch(function () {
      button.disabled = false;
      if (status) {
        status.textContent = 'The passkey was not used. Try again, or use another way.';
        status.focus();
      }
    });
  }

  if (!window.PublicKeyCredential || !navigator.credentials) return;
  document.querySelectorAll('button[data-webauthn]').forEach(function (button) {
    button.hidden = false;
    button.addEventListener('click', function () { start(button); });
  });
  document.querySelectorAll('.webauthn-unsupported').forEach(function (e) { e.hidden = true; });
})();
