//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every `/api/v1` endpoint.
//!
//! The document is built with utoipa from the handlers' `#[utoipa::path]`
//! annotations as the router registers them (utoipa-axum's `routes!` adds a handler
//! to the router and its description to the document in one step), so no endpoint is
//! served undescribed. [`finish`] then adds what every authenticated endpoint shares:
//! the security schemes (bearer token; session cookie, with the `X-CSRF-Token`
//! header for changes) and the 400, 401 and 403 answers (`csrf`, and
//! `password_change_required` but for the endpoints a session whose password must be
//! changed may call). Like every endpoint but the
//! login, the document itself needs a caller.

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi as _;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

use super::session::PASSWORD_CHANGE_EXEMPT;
use super::{ApiError, Caller, dto};
use crate::auth::cookie::SESSION_COOKIE;

/// The security scheme of API tokens.
const BEARER: &str = "bearer";
/// The security scheme of the session cookie.
const SESSION: &str = "session";
/// The security scheme of the CSRF header that changes made with a session need.
const CSRF: &str = "csrf";

/// The document's fixed part: what no handler annotation carries.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Cthulhu API",
        description = "The HTTP API of the Cthulhu live-video restreaming proxy. Every \
                       endpoint but `POST /api/v1/login` needs a caller: an API token \
                       (`Authorization: Bearer TOKEN`) or the session cookie of a browser \
                       login, whose changes (any method but GET) also need the \
                       `X-CSRF-Token` header the login gave. Errors are \
                       `{\"error\": {\"code\", \"message\", \"field\"?}}`. Secrets are \
                       write-only: stream keys and destination keys never come back, and a \
                       token or password is shown once, in the answer that creates it."
    ),
    components(schemas(dto::ErrorBody, dto::StreamList, dto::StatusEvent)),
    tags(
        (name = "session", description = "Browser login (password + TOTP) and the caller"),
        (name = "streams", description = "Streams and their live figures"),
        (name = "destinations", description = "A stream's push destinations, changed live"),
        (name = "tokens", description = "API tokens"),
        (name = "users", description = "Console users"),
        (name = "recordings", description = "Recordings and their segments"),
        (name = "server", description = "The server: reload, probe, events, this document"),
    )
)]
struct ApiDoc;

/// The document before the handlers' paths are added.
pub(super) fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// Adds the security schemes, and to every operation that does not declare its own
/// security (all but the login) the security it needs and the answers every such
/// operation can give: 401 without a valid caller, 403 for a change made with a
/// session but without the CSRF header or for a session whose password must be
/// changed first, 400 for a body that is not JSON.
pub(super) fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("cth_...")
                .description(Some(
                    "An API token (`cthulhu-server token create --name NAME`, or \
                     `POST /api/v1/tokens`): `Authorization: Bearer TOKEN`.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            SESSION_COOKIE,
            "The session cookie set by `POST /api/v1/login`.",
        ))),
    );
    components.add_security_scheme(
        CSRF,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "The `csrf_token` of the login's answer: needed with the session cookie by \
             every method but GET and HEAD (bearer-token calls need none).",
        ))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("HEAD", &mut item.head),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("PATCH", &mut item.patch),
            ("DELETE", &mut item.delete),
        ];
        for (method, op) in ops {
            let safe = matches!(method, "GET" | "HEAD");
            let exempt = PASSWORD_CHANGE_EXEMPT.contains(&(method, path.as_str()));
            let Some(op) = op.as_mut() else { continue };
            if op.security.is_some() {
                continue;
            }
            let session = SecurityRequirement::new(SESSION, Vec::<String>::new());
            let session = if safe {
                session
            } else {
                session.add(CSRF, Vec::<String>::new())
            };
            op.security = Some(vec![
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
                session,
            ]);
            let answers = &mut op.responses.responses;
            let mut common = vec![("401", UNAUTHORIZED)];
            match (safe, exempt) {
                (true, true) => {}
                (true, false) => common.push(("403", PASSWORD_CHANGE)),
                (false, true) => common.push(("403", CSRF_MISSING)),
                (false, false) => common.push(("403", CSRF_OR_PASSWORD_CHANGE)),
            }
            if op.request_body.is_some() {
                common.push(("400", BAD_REQUEST));
            }
            for (status, description) in common {
                answers
                    .entry(status.to_owned())
                    .or_insert_with(|| error_answer(description));
            }
        }
    }
}

/// The 401 of every authenticated endpoint.
const UNAUTHORIZED: &str = "No caller: no token, an unknown or revoked one, or no or an \
                            expired session (`unauthorized`)";
/// The 403 of every change.
const CSRF_MISSING: &str = "A change made with the session cookie without its \
                            `X-CSRF-Token` header (`csrf`)";
/// The 403 of every read but `GET /api/v1/me`.
const PASSWORD_CHANGE: &str = "A session whose password must be changed first \
                               (`password_change_required`): `POST /api/v1/me/password`";
/// The 403 of every change but `POST /api/v1/me/password` and `POST /api/v1/logout`.
const CSRF_OR_PASSWORD_CHANGE: &str = "A change made with the session cookie without its \
                                       `X-CSRF-Token` header (`csrf`), or a session whose \
                                       password must be changed first \
                                       (`password_change_required`): \
                                       `POST /api/v1/me/password`";
/// The 400 of every endpoint with a body.
const BAD_REQUEST: &str = "The body is not JSON, or not sent as `application/json` \
                           (`bad_request`)";

/// An answer with the error shape.
fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
        .into()
}

/// The document, as the router built it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "server",
    responses(
        (status = 200, description = "This OpenAPI 3.1 document", body = serde_json::Value),
    )
)]
pub(super) async fn openapi_json(
    _caller: Caller,
    Extension(doc): Extension<Arc<OpenApi>>,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(doc.as_ref())
        .map_err(|e| ApiError::internal("writing the OpenAPI document", e))?;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::Operation;

    use super::*;

    /// The document as the router builds it.
    fn document() -> OpenApi {
        let mut doc = super::super::routes().into_openapi();
        finish(&mut doc);
        doc
    }

    /// Every operation of `doc` with its method and path.
    fn operations(doc: &OpenApi) -> Vec<(&'static str, &str, &Operation)> {
        let mut ops = Vec::new();
        for (path, item) in &doc.paths.paths {
            let methods = [
                ("GET", &item.get),
                ("HEAD", &item.head),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ];
            for (method, op) in methods {
                if let Some(op) = op {
                    ops.push((method, path.as_str(), op));
                }
            }
        }
        ops
    }

    #[test]
    fn every_operation_is_described_and_secured_but_the_login() {
        let doc = document();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(
            json["openapi"].as_str().unwrap().starts_with("3.1"),
            "{json}"
        );
        let ops = operations(&doc);
        assert!(ops.len() >= 24, "{} operations", ops.len());
        for (method, path, op) in &ops {
            assert!(path.starts_with("/api/v1/"), "{method} {path}");
            assert!(!op.responses.responses.is_empty(), "{method} {path}");
            let security = serde_json::to_value(&op.security).unwrap();
            if (*method, *path) == ("POST", "/api/v1/login") {
                assert_eq!(security, serde_json::json!([{}]), "the login is anonymous");
                assert!(op.responses.responses.contains_key("429"));
                continue;
            }
            let answers = &op.responses.responses;
            assert!(answers.contains_key("401"), "{method} {path}");
            let mut schemes = serde_json::json!([{ "bearer": [] }, { "session": [] }]);
            if *method != "GET" {
                schemes[1]["csrf"] = serde_json::json!([]);
                assert!(answers.contains_key("403"), "{method} {path}");
            }
            // A session whose password must be changed gets 403 everywhere but on
            // the exempt endpoints, which say so.
            let exempt = PASSWORD_CHANGE_EXEMPT.contains(&(*method, *path));
            let forbidden = serde_json::to_value(answers.get("403")).unwrap();
            assert_eq!(
                !exempt,
                forbidden.to_string().contains("password_change_required"),
                "{method} {path}: {forbidden}"
            );
            assert_eq!(security, schemes, "{method} {path}");
            if op.request_body.is_some() {
                assert!(answers.contains_key("400"), "{method} {path}");
            }
            // Every path parameter is described.
            let params: Vec<String> = op
                .parameters
                .iter()
                .flatten()
                .map(|p| format!("{{{}}}", p.name))
                .collect();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                assert!(
                    params.iter().any(|p| p == segment),
                    "{method} {path}: {segment} undescribed"
                );
            }
        }
        for schema in ["ErrorBody", "Stream", "Destination", "StatusEvent"] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "{schema} missing"
            );
        }
        for scheme in [BEARER, SESSION, CSRF] {
            assert!(
                json["components"]["securitySchemes"][scheme].is_object(),
                "{scheme} missing"
            );
        }
    }

    /// Every `$ref` of the document names a schema it has.
    #[test]
    fn every_reference_resolves() {
        let json = serde_json::to_value(document()).unwrap();
        let mut stack = vec![&json];
        let mut refs = 0;
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(r) = map.get("$ref").and_then(|r| r.as_str()) {
                        let name = r.strip_prefix("#/components/schemas/").unwrap();
                        assert!(
                            json["components"]["schemas"][name].is_object(),
                            "{r} unresolved"
                        );
                        refs += 1;
                    }
                    stack.extend(map.values());
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        assert!(refs > 20, "{refs} references");
    }

    /// No route bypasses `routes!` (a route added with axum's own methods would
    /// serve an endpoint the document does not describe).
    #[test]
    fn every_route_goes_through_the_document() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            // Spelled apart so that this file does not match itself.
            for method in ["route", "route_service", "nest_service"] {
                let needle = format!(".{method}(");
                assert!(
                    !text.contains(&needle),
                    "{}: `{needle}` bypasses the OpenAPI document: register the \
                     handler with utoipa_axum's routes! and #[utoipa::path]",
                    path.display()
                );
            }
        }
        assert!(files >= 7, "{files} files in {}", dir.display());
    }
}
