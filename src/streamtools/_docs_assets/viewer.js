// The AsyncAPI page of streamtools: renders the document embedded in the page
// (<script type="application/json" id="asyncapi-document">) with the DOM API only.
// No framework, no network: it fetches nothing, and the page's Content-Security-Policy
// allows no origin but its own.
"use strict";

(function () {
  const doc = JSON.parse(document.getElementById("asyncapi-document").textContent);
  const MAX_DEPTH = 12;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // "#/components/schemas/A/$defs/B" -> the value it points at in doc (JSON Pointer, RFC 6901)
  function resolve(ref) {
    if (typeof ref !== "string" || !ref.startsWith("#/")) return undefined;
    let node = doc;
    for (const raw of ref.slice(2).split("/")) {
      const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
      if (node === null || typeof node !== "object" || !(key in node)) return undefined;
      node = node[key];
    }
    return node;
  }

  function refName(ref) {
    const parts = ref.split("/");
    return parts[parts.length - 1].replace(/~1/g, "/").replace(/~0/g, "~");
  }

  function deref(value) {
    return value && typeof value === "object" && "$ref" in value ? resolve(value.$ref) : value;
  }

  const CONSTRAINTS = [
    "format", "pattern", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties",
  ];

  function typeText(schema) {
    if (schema === true) return "any";
    if (schema === false) return "nothing";
    const type = schema.type;
    if (Array.isArray(type)) return type.join(" | ");
    if (type) return type;
    if ("const" in schema) return "const";
    if (schema.enum) return "enum";
    if (schema.properties) return "object";
    if (schema.allOf) return "all of";
    if (schema.oneOf) return "one of";
    if (schema.anyOf) return "any of";
    return "any";
  }

  // One schema as a readable tree: type, constraints, description, then its parts.
  function schemaView(schema, depth, seen) {
    const box = el("div", { class: "schema" });
    if (schema && typeof schema === "object" && "$ref" in schema) {
      const ref = schema.$ref;
      box.append(el("span", { class: "ref" }, "→ " + refName(ref)));
      const target = resolve(ref);
      if (target === undefined) {
        box.append(el("span", { class: "note" }, " (unresolved " + ref + ")"));
        return box;
      }
      if (seen.has(ref) || depth > MAX_DEPTH) {
        box.append(el("span", { class: "note" }, " (see above)"));
        return box;
      }
      box.append(schemaView(target, depth + 1, new Set([...seen, ref])));
      return box;
    }
    if (schema === null || typeof schema !== "object") {
      box.append(el("span", { class: "type" }, typeText(schema)));
      return box;
    }
    const line = el("div", { class: "line" }, el("span", { class: "type" }, typeText(schema)));
    if (schema.title) line.append(el("span", { class: "title" }, " " + schema.title));
    if ("const" in schema) line.append(el("code", {}, " = " + JSON.stringify(schema.const)));
    if (schema.enum) {
      line.append(el("span", { class: "enum" }, " " + schema.enum.map((v) => JSON.stringify(v)).join(" | ")));
    }
    for (const key of CONSTRAINTS) {
      if (key in schema) line.append(el("span", { class: "constraint" }, key + ": " + JSON.stringify(schema[key])));
    }
    if ("default" in schema) {
      line.append(el("span", { class: "constraint" }, "default: " + JSON.stringify(schema.default)));
    }
    box.append(line);
    if (schema.description) box.append(el("p", { class: "description" }, schema.description));
    if (depth > MAX_DEPTH) return box;
    if (schema.properties) {
      const required = new Set(schema.required || []);
      const table = el("table", { class: "properties" });
      for (const [name, sub] of Object.entries(schema.properties)) {
        table.append(el("tr", {},
          el("th", {}, el("code", {}, name), required.has(name) ? el("span", { class: "required" }, " required") : null),
          el("td", {}, schemaView(sub, depth + 1, seen))));
      }
      box.append(table);
    }
    if (schema.additionalProperties !== undefined && schema.additionalProperties !== true) {
      const extra = schema.additionalProperties;
      box.append(el("div", { class: "part" }, el("span", { class: "label" }, "other properties: "),
        extra === false ? el("span", { class: "note" }, "none allowed") : schemaView(extra, depth + 1, seen)));
    }
    if (schema.items !== undefined) {
      box.append(el("div", { class: "part" }, el("span", { class: "label" }, "items: "),
        schemaView(schema.items, depth + 1, seen)));
    }
    for (const key of ["allOf", "oneOf", "anyOf"]) {
      if (!Array.isArray(schema[key])) continue;
      const list = el("ol", { class: "variants" });
      for (const sub of schema[key]) list.append(el("li", {}, schemaView(sub, depth + 1, seen)));
      box.append(el("div", { class: "part" }, el("span", { class: "label" }, key + ": "), list));
    }
    if (schema.discriminator) {
      box.append(el("div", { class: "part" }, el("span", { class: "label" }, "discriminator: "),
        el("code", {}, JSON.stringify(schema.discriminator))));
    }
    return box;
  }

  function bindingsView(bindings) {
    if (!bindings) return document.createDocumentFragment();
    const list = el("dl", { class: "bindings" });
    for (const [protocol, value] of Object.entries(bindings)) {
      list.append(el("dt", {}, protocol + " binding"), el("dd", {}, el("code", {}, JSON.stringify(value))));
    }
    return list;
  }

  function messageView(key, message) {
    const name = message.name || key;
    const box = el("article", { class: "message", "data-message": name },
      el("h4", {}, "Message ", el("span", { class: "message-name" }, name)));
    if (message.title && message.title !== name) box.append(el("p", { class: "subtitle" }, message.title));
    if (message.summary) box.append(el("p", { class: "description" }, message.summary));
    if (message.contentType) box.append(el("p", {}, "Content type: ", el("code", {}, message.contentType)));
    if (message.correlationId) {
      const corr = deref(message.correlationId) || {};
      box.append(el("p", {}, "Correlation id: ", el("code", {}, corr.location || ""), corr.description ? " — " + corr.description : ""));
    }
    if (message.payload !== undefined) {
      box.append(el("h5", {}, "Payload"), schemaView(message.payload, 0, new Set()));
    }
    if (message.headers !== undefined) {
      box.append(el("h5", {}, "Headers"), schemaView(message.headers, 0, new Set()));
    }
    box.append(bindingsView(message.bindings));
    return box;
  }

  function channelView(key, channel, operations) {
    const address = channel.address === undefined || channel.address === null ? key : channel.address;
    const box = el("section", { class: "channel", "data-address": address, id: "channel-" + key },
      el("h3", {}, "Channel ", el("span", { class: "address" }, address)));
    if (channel.description) box.append(el("p", { class: "description" }, channel.description));
    const ops = el("ul", { class: "operations" });
    for (const [opKey, op] of operations) {
      ops.append(el("li", { class: "operation" }, el("span", { class: "action action-" + op.action }, op.action),
        " ", el("code", {}, opKey), op.description ? " — " + op.description : "", bindingsView(op.bindings)));
    }
    if (operations.length) box.append(el("h4", {}, "Operations"), ops);
    box.append(bindingsView(channel.bindings));
    for (const [msgKey, ref] of Object.entries(channel.messages || {})) {
      const message = deref(ref);
      if (message) box.append(messageView(msgKey, message));
    }
    return box;
  }

  function render() {
    const info = doc.info || {};
    const main = document.getElementById("content");
    main.replaceChildren();
    document.getElementById("title").textContent = (info.title || "AsyncAPI") + " " + (info.version || "");
    const about = el("section", { id: "info" },
      el("p", {}, "AsyncAPI ", el("code", {}, String(doc.asyncapi || "?")),
        doc.defaultContentType ? ", default content type " : "",
        doc.defaultContentType ? el("code", {}, doc.defaultContentType) : ""));
    if (info.description) about.append(el("p", { class: "description" }, info.description));
    main.append(about);

    const servers = Object.entries(doc.servers || {});
    if (servers.length) {
      const list = el("ul", { id: "servers" });
      for (const [name, server] of servers) {
        list.append(el("li", { class: "server" }, el("strong", {}, name), " ",
          el("code", {}, (server.protocol || "") + "://" + (server.host || "") + (server.pathname || "")),
          server.protocolVersion ? " (" + server.protocol + " " + server.protocolVersion + ")" : ""));
      }
      main.append(el("h2", {}, "Servers"), list);
    }

    const channels = Object.entries(doc.channels || {});
    const operations = Object.entries(doc.operations || {});
    const section = el("div", { id: "channels" });
    for (const [key, channel] of channels) {
      const pointer = "#/channels/" + key.replace(/~/g, "~0").replace(/\//g, "~1");
      const mine = operations.filter(([, op]) => op.channel && op.channel.$ref === pointer);
      section.append(channelView(key, channel, mine));
    }
    main.append(el("h2", {}, "Channels (" + channels.length + ")"), section);
    document.body.dataset.rendered = "true";
  }

  try {
    render();
  } catch (error) {
    document.getElementById("content").replaceChildren(el("p", { class: "error" }, "Cannot render the document: " + error));
    document.body.dataset.rendered = "error";
  }
})();
