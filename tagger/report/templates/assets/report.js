/* tagger report: the search box (over the index in search-index.js) and the review queue's decisions file. */
(function () {
  "use strict";
  var index = window.TAGGER_INDEX || {labels: [], files: []};

  function item(href, text, note) {
    var li = document.createElement("li"), a = document.createElement("a");
    a.href = href; a.textContent = text; li.appendChild(a);
    if (note) { var s = document.createElement("span"); s.className = "muted"; s.textContent = " " + note; li.appendChild(s); }
    return li;
  }

  function search(box, list) {
    var q = box.value.trim().toLowerCase();
    list.textContent = "";
    if (!q) { list.hidden = true; return; }
    var shown = 0;
    index.labels.forEach(function (l) {
      if (shown < 30 && l[0].toLowerCase().indexOf(q) >= 0) { list.appendChild(item(l[1], l[0], "label, " + l[2] + " positive")); shown++; }
    });
    index.files.forEach(function (f) {
      if (shown < 30 && f[0].toLowerCase().indexOf(q) >= 0) {
        f[2].forEach(function (p) { if (shown < 30) { list.appendChild(item(p[0], f[0], "on " + p[1])); shown++; } });
      }
    });
    if (!shown) { var none = document.createElement("li"); none.className = "muted"; none.textContent = "no match"; list.appendChild(none); }
    list.hidden = false;
  }

  function review(queue) {
    var decided = {}, button = document.getElementById("download"), count = document.getElementById("n-decided");
    function key(li) { return li.dataset.uri + "\u001f" + li.dataset.label; }
    function update() {
      var n = Object.keys(decided).length;
      count.textContent = String(n);
      button.disabled = n === 0;
    }
    queue.addEventListener("click", function (ev) {
      var b = ev.target.closest("button"); if (!b) { return; }
      var li = b.closest("li"), choice = b.classList.contains("accept") ? "accept" : "reject";
      if (decided[key(li)] && decided[key(li)].decision === choice) {
        delete decided[key(li)]; li.classList.remove("accepted", "rejected");
      } else {
        decided[key(li)] = {uri: li.dataset.uri, label: li.dataset.label, decision: choice};
        li.classList.toggle("accepted", choice === "accept"); li.classList.toggle("rejected", choice === "reject");
      }
      update();
    });
    button.addEventListener("click", function () {
      var doc = {format: queue.dataset.format, version: 1, run: Number(document.body.dataset.run),
                 decisions: Object.keys(decided).map(function (k) { return decided[k]; })};
      var blob = new Blob([JSON.stringify(doc, null, 1)], {type: "application/json"});
      var a = document.createElement("a");
      a.href = URL.createObjectURL(blob); a.download = queue.dataset.file;
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    });
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("search"), list = document.getElementById("search-results");
    if (box && list) { box.addEventListener("input", function () { search(box, list); }); }
    var queue = document.getElementById("queue");
    if (queue) { review(queue); }
  });
})();
