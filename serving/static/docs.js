// The API docs page: Swagger UI (swagger-ui-bundle.js, served by this service and loaded
// before this file) rendering /openapi.json. A file rather than an inline script, so the
// page works under a Content-Security-Policy without 'unsafe-inline'.
"use strict";

(() => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    // No badge that sends the document to validator.swagger.io: nothing leaves this host.
    validatorUrl: null,
    onComplete: () => {
      root.dataset.ready = "true"; // lets tests know the document is rendered
    },
  });
})();
