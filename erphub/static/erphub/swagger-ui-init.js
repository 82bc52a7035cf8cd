// Swagger UI's start-up for /api/docs/ as a static file, so the page runs no inline script (CSP Level 3
// script-src 'self'; erphub/csp.py). drf-spectacular's swagger_ui.js, reading the values that template
// rendered into the code from the page's JSON data block instead (erphub/api_docs.py SwaggerUIView).
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("swagger-ui-config").textContent);
  const schemaAuthNames = config.schemaAuthNames;
  let schemaAuthFailed = false;
  let ui;

  // After "Authorize" or "Logout", fetch the schema again with (or without) the credentials.
  const reloadSchema = (ori) => (...args) => {
    schemaAuthFailed = false;
    setTimeout(() => ui.specActions.download());
    return ori(...args);
  };
  const plugins = [];
  if (schemaAuthNames.length > 0) {
    plugins.push(() => ({
      statePlugins: {
        auth: {
          wrapActions: { authorizeOauth2: reloadSchema, authorize: reloadSchema, logout: reloadSchema },
        },
      },
    }));
  }

  const isSchemaUrl = (url) => ui !== undefined && url === new URL(ui.getConfigs().url, document.baseURI).href;

  const responseInterceptor = (response) => {
    if (!response.ok && isSchemaUrl(response.url) && !schemaAuthFailed) {
      // Retry once without credentials, as drf-spectacular does.
      console.warn("schema request received '" + response.status + "'. disabling credentials for schema till logout.");
      schemaAuthFailed = true;
      setTimeout(() => ui.specActions.download());
    }
    return response;
  };

  const authorizedSchemes = () => {
    if (ui !== undefined) {
      const state = ui.getState().get("auth").get("authorized");
      return state !== undefined && Object.keys(state.toJS()).length !== 0 ? state.toJS() : undefined;
    }
    return [undefined, "{}"].includes(localStorage.authorized) ? undefined : JSON.parse(localStorage.authorized);
  };

  const injectAuthCredentials = (request) => {
    const authorized = authorizedSchemes();
    if (authorized === undefined) {
      return;
    }
    for (const authName of schemaAuthNames) {
      const authDef = authorized[authName];
      if (authDef === undefined || authDef.schema === undefined) {
        continue;
      }
      const schema = authDef.schema;
      if (schema.type === "http" && schema.scheme === "bearer") {
        request.headers.Authorization = "Bearer " + authDef.value;
        return;
      } else if (schema.type === "http" && schema.scheme === "basic") {
        request.headers.Authorization = "Basic " + btoa(authDef.value.username + ":" + authDef.value.password);
        return;
      } else if (schema.type === "apiKey" && schema.in === "header") {
        request.headers[schema.name] = authDef.value;
        return;
      } else if (schema.type === "oauth2" && authDef.token.token_type === "Bearer") {
        request.headers.Authorization = "Bearer " + authDef.token.access_token;
        return;
      }
    }
  };

  const requestInterceptor = (request) => {
    if (request.loadSpec && schemaAuthNames.length > 0 && !schemaAuthFailed) {
      try {
        injectAuthCredentials(request);
      } catch (e) {
        console.error("schema auth injection failed with error: ", e);
      }
    }
    // "Try it out" with the browser's session: Django's CSRF check wants the token on unsafe methods. Sent
    // to this origin only (same-origin credentials), never to another host.
    if (!["GET", undefined].includes(request.method) && request.credentials === "same-origin") {
      request.headers[config.csrfHeaderName] = config.csrfToken;
    }
    return request;
  };

  ui = SwaggerUIBundle({
    url: config.schemaUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    plugins,
    layout: "BaseLayout",
    requestInterceptor,
    responseInterceptor,
    ...config.settings,
  });
  if (config.oauth2Config) {
    ui.initOAuth(config.oauth2Config);
  }
  window.ui = ui;
})();
