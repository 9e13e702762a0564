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

// Material's instant navigation swaps pages without a reload: typeset again.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && window.MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
