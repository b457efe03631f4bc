/* The one script of the pickup pages: a passkey ceremony (WebAuthn) on a button's click.
 *
 * The button (id "passkey-button") says what to do in data attributes: data-mode "create"
 * (register a passkey) or "get" (sign in with one), data-options (where to POST for the
 * server's options), data-verify (where to POST the browser's answer), data-csrf (the form
 * token, sent as the X-CSRF-Token header). The server speaks JSON with binary values in
 * base64url (WebAuthn Level 3's JSON forms); the browser API takes and gives ArrayBuffers:
 * this file converts between the two and does nothing else. After a right answer the server
 * says where to go next ({"next": "/..."}); otherwise its {"message": "..."} is shown in the
 * status line (id "passkey-status"). */
(function () {
  "use strict";

  function toBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) { base64 += "="; }
    var raw = atob(base64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    if (!buffer) { return null; }
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      var copy = Object.assign({}, item);
      copy.id = toBuffer(item.id);
      return copy;
    });
  }

  function creationOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBuffer(json.challenge);
    options.user = Object.assign({}, json.user, { id: toBuffer(json.user.id) });
    options.excludeCredentials = descriptors(json.excludeCredentials);
    return options;
  }

  function requestOptions(json) {
    var options = Object.assign({}, json);
    options.challenge = toBuffer(json.challenge);
    options.allowCredentials = descriptors(json.allowCredentials);
    return options;
  }

  function credentialJson(credential) {
    var response = credential.response;
    var out = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) }
    };
    if (response.attestationObject) {
      out.response.attestationObject = toText(response.attestationObject);
      out.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      out.response.authenticatorData = toText(response.authenticatorData);
      out.response.signature = toText(response.signature);
      out.response.userHandle = toText(response.userHandle);
    }
    return out;
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var refusal = new Error(data.message || "Dat lukte niet. Probeer het opnieuw.");
          refusal.fromServer = true;
          throw refusal;
        }
        return data;
      });
    });
  }

  function start() {
    var button = document.getElementById("passkey-button");
    var status = document.getElementById("passkey-status");
    if (!button || !status) { return; }
    if (!window.PublicKeyCredential || !navigator.credentials) {
      button.disabled = true;
      var note = document.getElementById("passkey-unsupported");
      if (note) { note.hidden = false; }
      return;
    }
    button.addEventListener("click", function () {
      var mode = button.getAttribute("data-mode");
      var csrf = button.getAttribute("data-csrf");
      button.disabled = true;
      status.textContent = "Even geduld: volg de aanwijzingen van uw apparaat.";
      post(button.getAttribute("data-options"), csrf, {}).then(function (json) {
        return mode === "create"
          ? navigator.credentials.create({ publicKey: creationOptions(json) })
          : navigator.credentials.get({ publicKey: requestOptions(json) });
      }).then(function (credential) {
        if (!credential) {
          var none = new Error("Er is geen passkey gekozen.");
          none.fromServer = true;
          throw none;
        }
        return post(button.getAttribute("data-verify"), csrf, credentialJson(credential));
      }).then(function (result) {
        status.textContent = "Gelukt.";
        window.location.assign(result.next);
      }).catch(function (error) {
        // The browser's own messages are English and technical: only ours are shown.
        var text = "Dat lukte niet. Probeer het opnieuw.";
        if (error && error.fromServer) {
          text = error.message;
        } else if (error && error.name === "NotAllowedError") {
          text = "Dat is afgebroken of duurde te lang. Probeer het opnieuw.";
        } else if (error && error.name === "InvalidStateError") {
          text = "Deze passkey is al ingesteld op dit apparaat.";
        }
        status.textContent = text;
        button.disabled = false;
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
