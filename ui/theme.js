// Runs before first paint (a plain script in <head>), so a chosen theme never flashes.
(function () {
  try {
    var theme = localStorage.getItem("llamamesh.theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (e) { /* storage disabled: follow the system */ }
})();
