/* The version workbench (templates/admin/registry/promptversion/workbench.html).
 *
 * An enhancement over a plain form that saves without it: locale tabs, CodeMirror editors with
 * Jinja highlighting and line numbers, a live preview (POSTed to the admin's workbench preview
 * endpoint, debounced), variables found in the templates offered for declaration, JSON fields
 * checked as they are typed, and the keyboard: Ctrl/Cmd+S saves, Ctrl/Cmd+Enter previews,
 * Ctrl/Cmd+Shift+Enter saves and goes on to the commit confirmation. Nothing here saves by
 * itself: the form's own submit buttons do, and the server checks everything again.
 */
(function () {
  "use strict";

  var form = document.querySelector("form.wb-form");
  if (!form) return;
  var config = JSON.parse(document.getElementById("wb-config").textContent);
  var modelsData = JSON.parse(document.getElementById("wb-models-data").textContent);
  var hasCodeMirror = typeof window.CodeMirror === "function";
  var SECTIONS = ["system", "context", "instruction", "format"];
  var editors = {}; // textarea id -> CodeMirror instance (null: a plain textarea)
  var lineMarks = []; // [editor, line handle, class] marked by the last preview
  var active = null; // the shown locale panel
  var translations = null; // locale -> state, from the last preview
  var problemCounts = null; // locale -> number of errors, from the last preview
  var sampleState = {}; // variable name -> what the author typed as a sample value
  var collectedRows = []; // the variable rows sent with the last preview, in order
  var timer = null;
  var sequence = 0;
  var dirty = false;
  var submitting = false;

  document.body.classList.add("js-workbench");

  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }
  function one(selector, root) {
    return (root || document).querySelector(selector);
  }
  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- formset rows ---------------------------------------------------------------------------

  function newRow(prefix, templateId) {
    var total = document.getElementById("id_" + prefix + "-TOTAL_FORMS");
    var index = parseInt(total.value, 10);
    var holder = document.createElement("template");
    holder.innerHTML = document.getElementById(templateId).innerHTML.replace(/__prefix__/g, index);
    total.value = index + 1;
    return holder.content.firstElementChild;
  }

  // --- locales and tabs -----------------------------------------------------------------------

  var localesBox = one("#wb-locales");
  var tabs = one(".wb-tabs", localesBox);

  function panels() {
    return all("fieldset.wb-locale", localesBox);
  }
  function localeOf(panel) {
    var input = one("input[name$='-locale']", panel);
    return input ? input.value.trim() : "";
  }
  function isRemoved(root) {
    var box = one("input[name$='-DELETE']", root);
    return !!(box && box.checked);
  }
  function panelFor(locale) {
    return panels().filter(function (p) { return localeOf(p) === locale; })[0] || null;
  }

  function renderTabs() {
    tabs.innerHTML = "";
    panels().forEach(function (panel) {
      if (panel.dataset.blank === "1") return;
      var locale = localeOf(panel);
      var tab = make("button", "", locale || "new locale");
      tab.type = "button";
      tab.setAttribute("role", "tab");
      tab.setAttribute("aria-selected", panel === active ? "true" : "false");
      tab.setAttribute("aria-controls", panel.id);
      if (isRemoved(panel)) tab.style.textDecoration = "line-through";
      var state = translations ? translations[locale] : null;
      var source = state ? state === "source" : panel.dataset.source === "1" || (locale && locale === config.defaultLocale);
      var stale = state ? state === "stale" : panel.dataset.stale === "1";
      var errors = problemCounts ? problemCounts[locale] || 0 : parseInt(panel.dataset.errors || "0", 10);
      if (source) tab.appendChild(make("span", "wb-mark wb-mark-source", "source"));
      if (stale) {
        var mark = make("span", "wb-mark wb-mark-stale", "stale");
        mark.title = "The source text changed since this translation was written.";
        tab.appendChild(mark);
      }
      if (errors) tab.appendChild(make("span", "wb-mark wb-mark-errors", errors + (errors === 1 ? " problem" : " problems")));
      tab.addEventListener("click", function () { show(panel); });
      tabs.appendChild(tab);
    });
    var add = make("button", "wb-add-locale", "+ Add a locale");
    add.type = "button";
    add.addEventListener("click", addLocale);
    tabs.appendChild(add);
  }

  function show(panel) {
    active = panel;
    panels().forEach(function (p) { p.classList.toggle("wb-active", p === panel); });
    all(".wb-section textarea", panel).forEach(function (ta) {
      if (editors[ta.id]) editors[ta.id].refresh();
    });
    renderTabs();
    schedulePreview();
  }

  function wirePanel(panel) {
    var input = one("input[name$='-locale']", panel);
    if (input) input.addEventListener("input", function () { renderTabs(); changed(); });
    var remove = one("input[name$='-DELETE']", panel);
    if (remove) remove.addEventListener("change", function () { renderTabs(); changed(); });
    initEditors(panel);
  }

  function addLocale() {
    var panel = panels().filter(function (p) { return p.dataset.blank === "1"; })[0];
    if (panel) {
      delete panel.dataset.blank;
    } else {
      panel = newRow("templates", "wb-locale-template");
      panel.id = "wb-locale-new-" + panels().length;
      localesBox.insertBefore(panel, document.getElementById("wb-locale-template"));
      wirePanel(panel);
    }
    show(panel);
    var input = one("input[name$='-locale']", panel);
    if (input) input.focus();
  }

  // --- editors --------------------------------------------------------------------------------

  function initEditors(root) {
    all(".wb-section textarea", root).forEach(function (ta) {
      if (ta.id in editors) return;
      if (!hasCodeMirror) {
        editors[ta.id] = null;
        ta.addEventListener("input", changed);
        return;
      }
      var editor = window.CodeMirror.fromTextArea(ta, {
        mode: "jinja2",
        lineNumbers: true,
        lineWrapping: true,
        viewportMargin: Infinity,
        screenReaderLabel: ta.id
      });
      editor.on("change", function () { editor.save(); changed(); });
      editors[ta.id] = editor;
    });
  }

  function textOf(ta) {
    var editor = editors[ta.id];
    return (editor ? editor.getValue() : ta.value).replace(/\r\n?/g, "\n");
  }

  function markLine(id, line, cls) {
    var editor = editors[id];
    if (!editor || !line || line > editor.lineCount()) return;
    var handle = editor.addLineClass(line - 1, "background", cls);
    lineMarks.push([editor, handle, cls]);
  }

  function goTo(id, line) {
    var target = document.getElementById(id);
    if (!target) return false;
    var panel = target.closest("fieldset.wb-locale");
    if (panel) {
      delete panel.dataset.blank;
      if (panel !== active) show(panel);
    }
    var editor = editors[id];
    if (editor) {
      editor.getWrapperElement().scrollIntoView({ block: "center" });
      editor.focus();
      if (line) editor.setCursor({ line: line - 1, ch: 0 });
    } else {
      var row = target.closest("tr.wb-var");
      if (row) delete row.dataset.blank;
      target.scrollIntoView({ block: "center" });
      target.focus();
    }
    return true;
  }

  function gotoLink(text, id, line) {
    var link = make("a", "", text);
    link.href = "#" + id;
    link.addEventListener("click", function (event) {
      if (goTo(id, line)) event.preventDefault();
    });
    return link;
  }

  // --- variables ------------------------------------------------------------------------------

  var rowsBox = one("#wb-var-rows");

  function variableRows() {
    return all("tr.wb-var", rowsBox);
  }
  function field(row, name) {
    return one("[name$='-" + name + "']", row);
  }

  // Only a history (a messages variable) has a place: the "after" choice is off for other types
  // (a disabled field is not posted, so changing the type back leaves no stray place).
  function syncPlace(row) {
    var after = field(row, "after");
    if (!after) return;
    after.disabled = field(row, "type").value !== "messages";
    after.title = after.disabled ? "Only a messages variable has a place." : "The section its history follows (—: after the context).";
  }

  function wireRow(row) {
    all("input, select", row).forEach(function (input) {
      input.addEventListener(input.type === "text" ? "input" : "change", changed);
    });
    field(row, "type").addEventListener("change", function () { syncPlace(row); });
    syncPlace(row);
    var remove = field(row, "DELETE");
    if (remove) {
      remove.addEventListener("change", function () { row.classList.toggle("wb-removed", remove.checked); });
    }
  }

  function addVariable(name, kind) {
    var row = variableRows().filter(function (r) { return r.dataset.blank === "1"; })[0];
    if (row) {
      delete row.dataset.blank;
    } else {
      row = newRow("variables", "wb-variable-template");
      rowsBox.appendChild(row);
      wireRow(row);
    }
    if (name) {
      field(row, "name").value = name;
      field(row, "type").value = kind || "string";
      syncPlace(row);
    } else {
      field(row, "name").focus();
    }
    changed();
    return row;
  }

  function parseDefault(raw, type) {
    if (!raw.trim()) return { ok: true, value: null };
    try {
      return { ok: true, value: JSON.parse(raw) };
    } catch (error) {
      // As the form reads it: text that is not JSON is taken literally for a string.
      return type === "string" ? { ok: true, value: raw } : { ok: false, value: null };
    }
  }

  function collectVariables() {
    var variables = [];
    collectedRows = [];
    variableRows().forEach(function (row) {
      if (row.dataset.blank === "1" || isRemoved(row)) return;
      var name = field(row, "name").value.trim();
      if (!name) return;
      var type = field(row, "type").value;
      var required = field(row, "required");
      var after = field(row, "after");
      var variable = {
        name: name,
        type: type,
        required: !!(required && required.checked),
        default: parseDefault(field(row, "default").value, type).value,
        description: field(row, "description").value
      };
      // Only a history has a place; sent when chosen, so the check can refuse it elsewhere.
      if (after && after.value && !after.disabled) variable.after = after.value;
      variables.push(variable);
      collectedRows.push(row);
    });
    return variables;
  }

  function showVariableFindings(data) {
    var box = one("#wb-suggestions");
    box.innerHTML = "";
    var undeclared = data.undeclared || [];
    if (undeclared.length) {
      box.appendChild(make("strong", "", "Used in the templates, not declared:"));
      var list = make("ul");
      undeclared.forEach(function (use) {
        var item = make("li");
        item.appendChild(make("code", "", use.name));
        item.appendChild(document.createTextNode(" (" + use.locale + " · " + use.section + ", "));
        var panel = panelFor(use.locale);
        var ta = panel ? one(".wb-section[data-section='" + use.section + "'] textarea", panel) : null;
        item.appendChild(ta ? gotoLink("line " + use.line, ta.id, use.line) : document.createTextNode("line " + use.line));
        item.appendChild(document.createTextNode(") "));
        var declare = make("button", "button", "Declare as " + use.kind);
        declare.type = "button";
        declare.addEventListener("click", function () { addVariable(use.name, use.kind); });
        item.appendChild(declare);
        list.appendChild(item);
      });
      box.appendChild(list);
      if (undeclared.length > 1) {
        var every = make("button", "button", "Declare all " + undeclared.length);
        every.type = "button";
        every.addEventListener("click", function () {
          undeclared.forEach(function (use) { addVariable(use.name, use.kind); });
        });
        box.appendChild(every);
      }
    }
    var unused = data.unused || [];
    variableRows().forEach(function (row) {
      var flag = one(".wb-unused", row);
      if (flag) flag.hidden = unused.indexOf(field(row, "name").value.trim()) < 0;
    });
  }

  // --- sample values --------------------------------------------------------------------------

  function renderSamples(variables) {
    var box = one("#wb-samples");
    var key = JSON.stringify(variables.map(function (v) { return [v.name, v.type, v.default]; }));
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.innerHTML = "";
    if (!variables.length) return;
    box.appendChild(make("strong", "", "Sample values"));
    variables.forEach(function (v) {
      var id = "wb-sample-" + v.name;
      var label = make("label", "", v.name + " (" + v.type + (v.required ? "" : ", optional") + ")");
      label.htmlFor = id;
      var input;
      var initial = v.name in sampleState ? sampleState[v.name] : v.default;
      if (v.type === "boolean") {
        input = make("input");
        input.type = "checkbox";
        input.checked = !!initial;
      } else {
        input = make(v.type === "list" || v.type === "object" || v.type === "string" || v.type === "messages" ? "textarea" : "input");
        if (input.tagName === "TEXTAREA") input.rows = v.type === "string" ? 1 : v.type === "messages" ? 4 : 2;
        if (initial === null || initial === undefined) initial = "";
        input.value = typeof initial === "string" ? initial : JSON.stringify(initial);
        input.placeholder = v.type === "list" ? '["a", "b"]' : v.type === "object" ? '{"key": "value"}' : v.type === "messages" ? "user: Where is my parcel?\nassistant: It left on Monday.\n(or JSON: [{\"role\": \"user\", \"content\": \"…\"}])" : v.required ? "required" : "left out";
      }
      input.id = id;
      input.dataset.variable = v.name;
      input.addEventListener(v.type === "boolean" ? "change" : "input", function () {
        sampleState[v.name] = v.type === "boolean" ? input.checked : input.value;
        schedulePreview();
      });
      box.appendChild(label);
      box.appendChild(input);
      var problems = make("ul", "wb-problems");
      problems.dataset.value = v.name;
      box.appendChild(problems);
    });
  }

  // A history typed as a transcript: "user: …", "assistant: …" or "tool: …" starts a message,
  // the lines after it continue it (registry/admin/pages.py transcript_messages, the preview
  // page's reading). "system: …" is read too, so the check refuses it in its own words. Text
  // before the first role is sent as it is: the check says a history is a list.
  function transcriptMessages(text) {
    var messages = [];
    var lines = text.replace(/\r\n/g, "\n").split("\n");
    for (var i = 0; i < lines.length; i++) {
      var start = /^(user|assistant|tool|system):[ \t]?([\s\S]*)$/.exec(lines[i]);
      if (start) messages.push({ role: start[1], content: start[2] });
      else if (messages.length) messages[messages.length - 1].content += "\n" + lines[i];
      else if (lines[i].trim()) return text;
    }
    messages.forEach(function (message) { message.content = message.content.replace(/^\n+|\n+$/g, ""); });
    return messages;
  }

  function sampleValues(variables) {
    var values = {};
    variables.forEach(function (v) {
      var input = document.getElementById("wb-sample-" + v.name);
      if (!input) return;
      if (v.type === "boolean") {
        values[v.name] = input.checked;
        return;
      }
      var raw = input.value;
      if (raw === "") return; // left out: its default applies, or it is reported missing
      if (v.type === "string") {
        values[v.name] = raw;
      } else if (v.type === "messages" && raw.trim().charAt(0) !== "[") {
        values[v.name] = transcriptMessages(raw);
      } else if (v.type === "integer" || v.type === "number") {
        values[v.name] = raw.trim() !== "" && isFinite(Number(raw)) ? Number(raw) : raw;
      } else {
        try { values[v.name] = JSON.parse(raw); } catch (error) { values[v.name] = raw; }
      }
    });
    return values;
  }

  // --- model binding and JSON fields ----------------------------------------------------------

  var providerSelect = one("#id_provider");
  var modelList = one("#wb-models");

  function fillModels() {
    modelList.innerHTML = "";
    (modelsData[providerSelect.value] || []).forEach(function (name) {
      var option = make("option");
      option.value = name;
      modelList.appendChild(option);
    });
  }

  function parseJsonField(kind, text) {
    if (!text.trim()) {
      if (kind === "response_schema") return { ok: true, value: null, message: "No response schema: any answer is accepted." };
      if (kind === "tool_choice" || kind === "parallel_tool_calls") return { ok: true, value: null, message: "" };
      if (kind === "tools") return { ok: true, value: [], message: "No tools." };
      return { ok: true, value: kind === "fallbacks" ? [] : {}, message: "" };
    }
    var value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return { ok: false, message: "Not valid JSON: " + error.message };
    }
    var isObject = value !== null && typeof value === "object" && !Array.isArray(value);
    if (kind === "parameters" && !isObject) return { ok: false, message: 'Enter a JSON object, e.g. {"temperature": 0.2}.' };
    if (kind === "response_schema" && !isObject) return { ok: false, message: "Enter a JSON Schema object, or leave it empty." };
    if (kind === "tools" && !(Array.isArray(value) && value.every(function (t) {
      return t !== null && typeof t === "object" && !Array.isArray(t);
    }))) {
      return { ok: false, message: 'Enter a JSON list of {"type": "function", "function": {"name": ...}}.' };
    }
    if (kind === "parallel_tool_calls" && typeof value !== "boolean") return { ok: false, message: "Enter true or false, or leave it empty." };
    if (kind === "fallbacks" && !(Array.isArray(value) && value.every(function (f) {
      return f !== null && typeof f === "object" && !Array.isArray(f);
    }))) {
      return { ok: false, message: 'Enter a JSON list of {"provider": ..., "model": ..., "parameters": {...}}.' };
    }
    return { ok: true, value: value, message: "Valid JSON." };
  }

  function jsonValue(kind) {
    var box = one(".wb-json[data-json='" + kind + "']");
    var result = parseJsonField(kind, one("textarea", box).value);
    var status = one(".wb-json-status", box);
    status.textContent = result.message;
    status.className = "wb-json-status " + (result.ok ? "wb-good" : "wb-bad");
    if (result.ok) return result.value;
    return kind === "fallbacks" || kind === "tools" ? [] : kind === "parameters" ? {} : null;
  }

  // --- the preview ----------------------------------------------------------------------------

  function status(text, bad) {
    var node = one("#wb-preview-status");
    node.textContent = text;
    node.style.color = bad ? "var(--error-fg)" : "";
  }

  function currentPrompt() {
    var select = one("#id_prompt");
    if (select) return select.value && /^\d+$/.test(select.value) ? parseInt(select.value, 10) : null;
    return config.prompt;
  }

  function collect() {
    var templates = {};
    panels().forEach(function (panel) {
      var locale = localeOf(panel);
      if (panel.dataset.blank === "1" || isRemoved(panel) || !locale) return;
      var sections = {};
      SECTIONS.forEach(function (name) {
        var ta = one(".wb-section[data-section='" + name + "'] textarea", panel);
        sections[name] = ta ? textOf(ta) : "";
      });
      templates[locale] = sections;
    });
    return {
      variables: collectVariables(),
      model: {
        provider: providerSelect.value,
        model: one("#id_model_name").value,
        parameters: jsonValue("parameters"),
        response_schema: jsonValue("response_schema"),
        fallbacks: jsonValue("fallbacks"),
        tools: jsonValue("tools"),
        tool_choice: jsonValue("tool_choice"),
        parallel_tool_calls: jsonValue("parallel_tool_calls")
      },
      templates: templates
    };
  }

  function changed() {
    dirty = true;
    schedulePreview();
  }

  function schedulePreview() {
    clearTimeout(timer);
    timer = setTimeout(previewNow, config.debounceMs);
  }

  function previewNow() {
    clearTimeout(timer);
    var prompt = currentPrompt();
    var content = collect();
    renderSamples(content.variables);
    if (!prompt) {
      status("Choose the prompt to preview.");
      return;
    }
    var token = one("input[name=csrfmiddlewaretoken]", form);
    var mine = ++sequence;
    status("Rendering…");
    fetch(config.previewUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token ? token.value : "" },
      body: JSON.stringify({
        prompt: prompt,
        version: config.version,
        locale: active ? localeOf(active) : "",
        values: sampleValues(content.variables),
        content: content
      })
    }).then(function (response) {
      return response.json().then(function (data) { return { response: response, data: data }; });
    }).then(function (answer) {
      if (mine !== sequence) return; // a newer preview is on its way
      if (!answer.response.ok) {
        status(answer.data.detail || "The preview was refused (" + answer.response.status + ").", true);
        return;
      }
      showPreview(answer.data);
    }).catch(function () {
      if (mine === sequence) status("The preview could not reach the server; your text is unchanged.", true);
    });
  }

  function clearProblems() {
    all(".wb-problems").forEach(function (list) { list.innerHTML = ""; });
    all(".wb-section.wb-has-problem").forEach(function (s) { s.classList.remove("wb-has-problem"); });
    lineMarks.forEach(function (mark) { mark[0].removeLineClass(mark[1], "background", mark[2]); });
    lineMarks = [];
  }

  function problemItem(problem, link) {
    var item = make("li", "problem-" + problem.severity);
    if (link) {
      item.appendChild(link);
      item.appendChild(document.createTextNode(": "));
    }
    // After a link that names the place, the message without its own ("en · format, line 2: …").
    item.appendChild(document.createTextNode(link && problem.message ? problem.message : problem.detail));
    return item;
  }

  function placeProblem(problem) {
    // In place (next to its section, field, row or sample input), and a link for the list.
    if (problem.locale !== undefined) {
      var panel = panelFor(problem.locale);
      var section = panel && problem.section ? one(".wb-section[data-section='" + problem.section + "']", panel) : null;
      if (problem.severity === "error") problemCounts[problem.locale] = (problemCounts[problem.locale] || 0) + 1;
      if (section) {
        var ta = one("textarea", section);
        one(".wb-problems", section).appendChild(problemItem(problem));
        if (problem.severity === "error") section.classList.add("wb-has-problem");
        markLine(ta.id, problem.line, problem.severity === "error" ? "wb-line-error" : "wb-line-warning");
        return gotoLink(problem.locale + " · " + problem.section + (problem.line ? ", line " + problem.line : ""), ta.id, problem.line);
      }
      var locale = panel ? one("input[name$='-locale']", panel) : null;
      return locale ? gotoLink(problem.locale || "locale", locale.id) : null;
    }
    if (problem.variable !== undefined) {
      var row = collectedRows[problem.variable];
      var input = row ? field(row, problem.field || "name") || field(row, "name") : null;
      return input ? gotoLink("variable " + field(row, "name").value, input.id) : null;
    }
    if (problem.value !== undefined) {
      var list = one(".wb-problems[data-value='" + problem.value + "']");
      if (list) list.appendChild(problemItem(problem));
      return gotoLink("sample " + problem.value, "wb-sample-" + problem.value);
    }
    if (problem.field) {
      var spot = one(".wb-problems[data-field='" + problem.field + "']");
      if (spot) spot.appendChild(problemItem(problem));
      return gotoLink(problem.field.replace("_", " "), "id_" + problem.field);
    }
    return null;
  }

  function showPreview(data) {
    clearProblems();
    problemCounts = {};
    translations = {};
    (data.translations || []).forEach(function (t) { translations[t.locale] = t.state; });
    var list = make("ul", "wb-problems");
    // A sample value is the preview's input, not the draft's: a missing one stops the preview,
    // never a save.
    var errors = 0, samples = 0;
    (data.problems || []).forEach(function (problem) {
      if (problem.severity === "error") {
        if (problem.value !== undefined) samples += 1;
        else errors += 1;
      }
      list.appendChild(problemItem(problem, placeProblem(problem)));
    });
    var box = one("#wb-preview-problems");
    box.innerHTML = "";
    if (list.children.length) {
      var heads = [];
      if (errors) heads.push(errors + (errors === 1 ? " problem" : " problems") + " (saving would be refused)");
      if (samples) heads.push(samples + (samples === 1 ? " sample value" : " sample values") + " to fill in for the preview (saving does not need them)");
      box.appendChild(make("strong", "", heads.length ? heads.join("; ") : "Warnings"));
      box.appendChild(list);
    }
    showVariableFindings(data);
    showMessages(data.render);
    renderTabs();
    status(errors || samples ? "Rendered with the problems listed." : "Up to date.");
  }

  function showMessages(render) {
    var box = one("#wb-messages");
    if (!render) {
      box.classList.add("wb-stale-preview");
      return;
    }
    if (render.blocked) {
      // Keep the last good messages, dimmed: the author sees what the fix will bring back.
      box.classList.add("wb-stale-preview");
      box.title = "Fix the problems above to render " + render.locale + " again.";
      return;
    }
    box.classList.remove("wb-stale-preview");
    box.title = "";
    box.innerHTML = "";
    var used = make("p", "locale-used", "Rendered with the " + render.locale + " template");
    if (render.requested_locale && render.requested_locale !== render.locale) {
      used.textContent += " (there is none for " + render.requested_locale + ")";
    }
    used.textContent += ".";
    box.appendChild(used);
    if (!render.messages.length) box.appendChild(make("p", "", "Every section rendered empty: there is no message to send."));
    render.messages.forEach(function (message) {
      var item = make("div", "message-box role-" + message.role);
      item.appendChild(make("div", "message-role", message.role));
      item.appendChild(make("pre", "registry-pre", message.content));
      box.appendChild(item);
    });
  }

  // --- keyboard, submit and leaving -----------------------------------------------------------

  function submitWith(name) {
    var button = one("input[type=submit][name='" + name + "']", form);
    if (!button) return;
    if (form.requestSubmit) form.requestSubmit(button);
    else button.click();
  }

  document.addEventListener("keydown", function (event) {
    if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
    var key = event.key;
    if ((key === "s" || key === "S") && !event.shiftKey) {
      event.preventDefault();
      submitWith("_continue");
    } else if (key === "Enter" && event.shiftKey) {
      event.preventDefault();
      submitWith("_commit");
    } else if (key === "Enter") {
      event.preventDefault();
      previewNow();
    }
  }, true);

  form.addEventListener("submit", function () {
    Object.keys(editors).forEach(function (id) { if (editors[id]) editors[id].save(); });
    submitting = true;
  });

  window.addEventListener("beforeunload", function (event) {
    if (dirty && !submitting) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  // --- start ----------------------------------------------------------------------------------

  panels().forEach(wirePanel);
  variableRows().forEach(wireRow);
  tabs.hidden = false;
  one("#wb-add-variable").hidden = false;
  one("#wb-add-variable").addEventListener("click", function () { addVariable(); });
  one("#wb-preview-now").hidden = false;
  one("#wb-preview-now").addEventListener("click", previewNow);
  providerSelect.addEventListener("change", function () { fillModels(); changed(); });
  one("#id_model_name").addEventListener("input", changed);
  all(".wb-json textarea").forEach(function (ta) { ta.addEventListener("input", changed); });
  one("#id_message").addEventListener("input", function () { dirty = true; });
  if (window.django && window.django.jQuery && one("#id_prompt")) {
    window.django.jQuery("#id_prompt").on("change", schedulePreview); // select2 fires jQuery events
  }
  fillModels();

  // The first locale with an error, else the first one written.
  var shown = panels().filter(function (p) { return p.dataset.blank !== "1"; });
  var withErrors = shown.filter(function (p) { return parseInt(p.dataset.errors || "0", 10) > 0; });
  show(withErrors[0] || shown[0] || panels()[0]);
  // The errors of the save, in the editors' gutters and linked from the list at the top.
  all("a.wb-goto").forEach(function (link) {
    var id = link.getAttribute("href").slice(1);
    var line = parseInt(link.dataset.line, 10) || 0;
    markLine(id, line, "wb-line-error");
    link.addEventListener("click", function (event) {
      if (goTo(id, line)) event.preventDefault();
    });
  });
  previewNow();
})();
