/* The playground (evaluations/admin/playground.py): runs one or two columns on the same inputs.
 *
 * Each column POSTs the form (the shared inputs, and its own version, provider and model) to the
 * run endpoint and reads the answer as server-sent events: "start", "token" (appended as it
 * comes), then "done" (the answer, its parsed output, whatever else it holds, its figures) or
 * "error" (the problem, every attempt). A refusal before the run (a 400 problem document) puts
 * each error next to its input. Every wait is bounded: a stream is aborted past the server's own
 * maximum. Text from the model or the author is set with textContent, never as HTML.
 * No dependencies, no build step.
 */
"use strict";
(function () {
  var form = document.getElementById("pg-form");
  if (!form) return;
  var config = JSON.parse(document.getElementById("pg-config").textContent);
  var compare = document.getElementById("pg-compare");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var COLUMN_FIELDS = ["version", "provider", "model"];
  var STREAM_LIMIT_MS = (config.maxSeconds + 30) * 1000;

  function one(selector, root) { return (root || document).querySelector(selector); }
  function all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function columns() {
    return all(".pg-column").filter(function (c) { return c.dataset.column === "a" || compare.checked; });
  }
  function fmt(value, unit) { return value === null || value === undefined ? "—" : value + (unit || ""); }

  function syncCompare() {
    var b = one("#pg-column-b");
    b.classList.toggle("pg-off", !compare.checked);
    all("select, input:not(#pg-compare)", b).forEach(function (input) { input.disabled = !compare.checked; });
  }
  compare.addEventListener("change", syncCompare);
  syncCompare();

  // --- problems in place ---------------------------------------------------------------------

  function clearProblems() {
    all(".pg-field-error").forEach(function (node) { node.remove(); });
    all(".form-row.errors").forEach(function (row) { row.classList.remove("errors"); });
    one("#pg-form-errors").textContent = "";
  }

  function placeError(column, error) {
    var row = error.field ? one(".form-row.field-" + error.field, form) : null;
    if (row) {
      var list = one("ul.pg-field-error", row);
      if (!list) {
        list = make("ul", "errorlist pg-field-error");
        row.insertBefore(list, row.firstChild);
        row.classList.add("errors");
      }
      var known = all("li", list).some(function (li) { return li.textContent === error.detail; });
      if (!known) list.appendChild(make("li", "", error.detail));
      return;
    }
    var target = COLUMN_FIELDS.indexOf(error.field) >= 0 ? one(".pg-target-errors", column) : null;
    var item = make("li", "pg-field-error", (error.field && !target ? error.field + ": " : "") + error.detail);
    (target || one(".pg-problems", column)).appendChild(target ? item : wrapNote(item));
  }

  function wrapNote(item) {
    var note = make("ul", "errorlist pg-field-error");
    note.appendChild(item);
    return note;
  }

  function showProblem(column, problem) {
    var box = one(".pg-problems", column);
    box.appendChild(make("p", "errornote pg-field-error", problem.title + " " + (problem.detail || "")));
    (problem.errors || []).forEach(function (error) { placeError(column, error); });
    if (problem.attempts) showAttempts(column, problem.attempts);
    status(column, "Nothing was run.", true);
  }

  function status(column, text, bad) {
    var node = one(".pg-status", column);
    node.textContent = text;
    node.classList.toggle("errornote", !!bad);
    node.classList.toggle("quiet", !bad);
  }

  // --- one column's run -----------------------------------------------------------------------

  function reset(column) {
    one(".pg-problems", column).textContent = "";
    one(".pg-target-errors", column).textContent = "";
    var output = one(".pg-output", column);
    output.textContent = "";
    output.hidden = true;
    ["pg-parsed", "pg-extra", "pg-figures", "pg-attempts", "pg-save"].forEach(function (name) {
      var node = one("." + name, column);
      if (node) node.hidden = true;
    });
    var done = one(".pg-save-done", column);
    if (done) done.textContent = "";
    column.lastRun = null;
  }

  function body(column) {
    var data = new FormData(form);
    all(".pg-column").forEach(function (c) {
      COLUMN_FIELDS.forEach(function (name) { data.delete(c.dataset.column + "-" + name); });
    });
    data.delete("compare");
    COLUMN_FIELDS.forEach(function (name) {
      data.set(name, one("[name=" + column.dataset.column + "-" + name + "]", column).value);
    });
    return data;
  }

  function run(column) {
    reset(column);
    status(column, "Running…");
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, STREAM_LIMIT_MS);
    return fetch(config.runUrl, {
      method: "POST",
      body: body(column),
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "text/event-stream" },
      signal: controller.signal
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("text/event-stream") !== 0) {
        return response.json().then(function (problem) { showProblem(column, problem); }, function () {
          showProblem(column, { title: "The run was refused (" + response.status + ").", detail: "" });
        });
      }
      return readEvents(response.body.getReader(), function (event, data) { onEvent(column, event, data); });
    }).catch(function (error) {
      var why = error && error.name === "AbortError" ? "The answer took too long and was stopped." : "The server could not be reached.";
      status(column, why, true);
    }).finally(function () {
      clearTimeout(timer);
      one(".pg-output", column).classList.remove("pg-streaming");
    });
  }

  function readEvents(reader, handle) {
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) return;
        buffer += decoder.decode(chunk.value, { stream: true });
        var end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          var frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          var event = "message", data = "";
          frame.split("\n").forEach(function (line) {
            if (line.indexOf("event: ") === 0) event = line.slice(7);
            else if (line.indexOf("data: ") === 0) data += line.slice(6);
          });
          if (data) handle(event, JSON.parse(data));
        }
        return pump();
      });
    }
    return pump();
  }

  function onEvent(column, event, data) {
    var output = one(".pg-output", column);
    if (event === "start") {
      column.lastRun = { variables: data.variables, locale: data.locale };
      column.toolCalls = null;
      status(column, "v" + data.version + (data.draft ? " (draft)" : "") + " · " + data.provider + " / " + data.model + " · " + data.locale + " — streaming…");
      output.hidden = false;
      output.classList.add("pg-streaming");
    } else if (event === "token") {
      output.textContent += data.text;
    } else if (event === "tool_call") {
      streamToolCall(column, data);
    } else if (event === "done") {
      output.classList.remove("pg-streaming");
      output.textContent = data.output;
      column.lastRun.output = data.output;
      showAnswer(column, data);
    } else if (event === "error") {
      output.classList.remove("pg-streaming");
      if (!output.textContent) output.hidden = true;
      showProblem(column, data);
      status(column, "No model answered: nothing but the failed call was recorded.", true);
      recordedLink(column, data.call);
    }
  }

  // A tool call streams in pieces: its index, id and name first, then its arguments a few
  // characters at a time. They are shown as they come; "done" shows the calls as parsed.
  function streamToolCall(column, delta) {
    var extra = one(".pg-extra", column);
    if (!column.toolCalls) {
      column.toolCalls = [];
      extra.textContent = "";
      extra.appendChild(make("h3", "", "tool calls (streaming)"));
      extra.appendChild(make("pre", "registry-pre pg-tool-stream", ""));
      extra.hidden = false;
    }
    var call = column.toolCalls[delta.index] || (column.toolCalls[delta.index] = { name: "", arguments: "" });
    if (delta.name) call.name = delta.name;
    call.arguments += delta.arguments || "";
    one(".pg-tool-stream", extra).textContent = column.toolCalls.map(function (c) {
      return c.name + "(" + c.arguments + ")";
    }).join("\n");
  }

  function showAnswer(column, data) {
    column.toolCalls = null;
    var head = one(".pg-status", column).textContent.replace(/ — streaming…$/, "");
    status(column, head + " — answered by " + data.answered_by.provider + " / " + data.answered_by.model + (data.answered_by.fallback ? " (a fallback)" : ""));
    if (data.parsed !== null && data.parsed !== undefined) {
      var parsed = one(".pg-parsed", column);
      one("pre", parsed).textContent = JSON.stringify(data.parsed, null, 2);
      parsed.hidden = false;
    }
    var extra = one(".pg-extra", column);
    extra.textContent = "";
    Object.keys(data.extra || {}).forEach(function (name) {
      extra.appendChild(make("h3", "", name.replace(/_/g, " ")));
      extra.appendChild(make("pre", "registry-pre", JSON.stringify(data.extra[name], null, 2)));
    });
    extra.hidden = !extra.children.length;
    var rows = [
      ["Tokens in / out", fmt(data.usage.input_tokens) + " / " + fmt(data.usage.output_tokens)],
      ["Cost", data.cost === null ? "— (no price for this model)" : data.cost],
      ["Latency", fmt(data.latency_ms, " ms")],
      ["First token", fmt(data.time_to_first_token_ms, " ms")]
    ];
    var figures = one(".pg-figures", column);
    var tbody = one("tbody", figures);
    tbody.textContent = "";
    rows.forEach(function (row) {
      var tr = make("tr");
      tr.appendChild(make("th", "", row[0]));
      tr.appendChild(make("td", "", row[1]));
      tbody.appendChild(tr);
    });
    figures.hidden = false;
    showAttempts(column, data.attempts);
    recordedLink(column, data.call);
    var save = one(".pg-save", column);
    if (save) save.hidden = false;
  }

  function showAttempts(column, attempts) {
    var box = one(".pg-attempts", column);
    var tbody = one("tbody", box);
    tbody.textContent = "";
    (attempts || []).forEach(function (a) {
      var tr = make("tr");
      [a.provider + " / " + a.model, a.outcome, fmt(a.latency_ms, " ms"), a.detail || ""].forEach(function (cell) {
        tr.appendChild(make("td", "", cell));
      });
      tbody.appendChild(tr);
    });
    box.hidden = !tbody.children.length;
  }

  function recordedLink(column, callId) {
    var line = make("p", "quiet pg-recorded");
    if (callId === null || callId === undefined) {
      line.textContent = "The call could not be recorded.";
    } else if (config.mayReadCalls) {
      line.appendChild(document.createTextNode("Recorded as "));
      line.appendChild(make("a", "", "call " + callId)).href = config.callUrl.replace("/0/", "/" + callId + "/");
      line.appendChild(document.createTextNode("."));
    } else {
      line.textContent = "Recorded as call " + callId + ".";
    }
    one(".pg-problems", column).appendChild(line);
  }

  // --- save as a case -------------------------------------------------------------------------

  all(".pg-save-button").forEach(function (button) {
    button.addEventListener("click", function () {
      var column = button.closest(".pg-column");
      var errors = one(".pg-save-errors", column);
      var done = one(".pg-save-done", column);
      errors.textContent = "";
      done.textContent = "";
      var last = column.lastRun;
      if (!last || last.output === undefined) return;
      var controller = new AbortController();
      var timer = setTimeout(function () { controller.abort(); }, 30000);
      fetch(config.caseUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        signal: controller.signal,
        body: JSON.stringify({
          dataset: parseInt(one(".pg-save-dataset", column).value, 10),
          key: one(".pg-save-key", column).value,
          variables: last.variables,
          locale: last.locale,
          output: last.output
        })
      }).then(function (response) {
        return response.json().then(function (answer) {
          if (response.ok) {
            done.appendChild(document.createTextNode("Saved as case "));
            done.appendChild(make("a", "", answer["case"])).href = answer.url;
            done.appendChild(document.createTextNode(" of " + answer.dataset + "."));
            return;
          }
          if (!(answer.errors || []).length) errors.appendChild(make("li", "", answer.detail || "Refused."));
          (answer.errors || []).forEach(function (e) {
            errors.appendChild(make("li", "", (e.field ? e.field + ": " : "") + e.detail));
          });
        });
      }).catch(function () {
        errors.appendChild(make("li", "", "The server could not be reached; nothing was saved."));
      }).finally(function () { clearTimeout(timer); });
    });
  });

  // --- the form -------------------------------------------------------------------------------

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearProblems();
    var button = one("#pg-run");
    button.disabled = true;
    Promise.all(columns().map(run)).finally(function () { button.disabled = false; });
  });
})();
