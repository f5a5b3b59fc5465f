// Swagger UI over this service's OpenAPI document. A file of its own, not an inline script,
// so the page's Content-Security-Policy can stay "script-src 'self'".
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // The online validator's badge is an image from validator.swagger.io: nothing leaves this host.
  validatorUrl: null,
});
