// Starts Swagger UI on the spec named by the container's data-spec-url attribute.
window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui-container");
  window.ui = SwaggerUIBundle({
    url: container.dataset.specUrl,
    dom_id: "#swagger-ui-container",
  });
});
