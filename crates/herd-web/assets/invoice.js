// The invoice's Print button (the content security policy allows no inline handlers).
"use strict";
document.getElementById("print")?.addEventListener("click", () => window.print());
