// Click or drag on a small circumplex to rate an item: moves the marker and fills the
// form's hidden valence/arousal inputs. Everything else on the page works without script.
"use strict";
(function () {
  var PAD = 26, SIZE = 320, INNER = SIZE - 2 * PAD;
  function clamp(x) { return Math.max(-1, Math.min(1, x)); }
  function place(svg, event) {
    var box = svg.getBoundingClientRect();
    var sx = (event.clientX - box.left) / box.width * SIZE;
    var sy = (event.clientY - box.top) / box.height * SIZE;
    var valence = clamp((sx - PAD) / INNER * 2 - 1);
    var arousal = clamp(1 - (sy - PAD) / INNER * 2);
    var marker = svg.querySelector(".marker");
    marker.setAttribute("cx", (PAD + (valence + 1) / 2 * INNER).toFixed(1));
    marker.setAttribute("cy", (PAD + (1 - arousal) / 2 * INNER).toFixed(1));
    marker.setAttribute("fill-opacity", "0.9");
    var form = svg.closest("form");
    form.elements.valence.value = valence.toFixed(3);
    form.elements.arousal.value = arousal.toFixed(3);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("svg.rate").forEach(function (svg) {
      var dragging = false;
      svg.addEventListener("pointerdown", function (e) { dragging = true; svg.setPointerCapture(e.pointerId); place(svg, e); });
      svg.addEventListener("pointermove", function (e) { if (dragging) { place(svg, e); } });
      svg.addEventListener("pointerup", function () { dragging = false; });
      svg.addEventListener("pointercancel", function () { dragging = false; });
    });
  });
})();
