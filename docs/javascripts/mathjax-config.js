// MathJax 3 configuration for pymdownx.arithmatex (generic mode).
// MathJax itself is vendored under docs/javascripts/mathjax (Apache-2.0), so
// the built site renders maths without reaching any CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  // the CHTML fonts are found relative to tex-chtml.js ([mathjax]/output/chtml/fonts/woff-v2)
};

// Material's instant navigation (if ever enabled) swaps pages without a reload:
// typeset the new page then. The first emission is the initial page, which
// MathJax typesets by itself; clearing its cache then would drop the glyph CSS.
if (typeof document$ !== "undefined") {
  let first = true;
  document$.subscribe(() => {
    if (first) {
      first = false;
      return;
    }
    if (window.MathJax && window.MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
