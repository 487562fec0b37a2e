//! A complete nginx configuration for a caching edge in front of Sluice
//! (`sluice edge nginx`).
//!
//! What the edge does, and why each directive is there:
//! - **One cache entry per object, whatever the token.** Playback paths carry the viewer's
//!   token as a path segment; the cache key is `{tenant}/{asset}/{entry}` without it, so
//!   two viewers holding different tokens for one segment share one entry.
//! - **Tokens checked at the edge.** Because the key ignores the token, a cached object
//!   must not be handed to a request whose token is bad: every playback request passes an
//!   `auth_request` to the origin's `/v1/edge/verify`, whose verdict the edge caches per
//!   token and client address (a grant until the token expires, at most a minute; a
//!   refusal ten seconds). The origin stays the one implementation of the token rules,
//!   so the edge cannot accept what the origin would refuse.
//! - **Misses collapse.** `proxy_cache_lock` lets one request per key go to the origin
//!   while the others wait for its answer: a flood of players asking for a new segment
//!   reaches the origin once.
//! - **Live playlists** follow the origin's `Cache-Control` (fresh for half a target
//!   duration, then `stale-while-revalidate`): stale copies are served while one
//!   background request refreshes them.
//! - **Purge**: `/_sluice/purge/{tenant}/{asset}/{entry}` with the admin key refetches the
//!   object from the origin (bypassing both caches) and replaces the entry, which then
//!   lives one second before the next request fetches it normally; an object gone from the
//!   origin is gone from the edge. (nginx without commercial modules has no delete-by-key.)
//! - `X-Cache-Status` on every answer (`HIT`, `MISS`, `STALE`, `UPDATING`, … for playback;
//!   `BYPASS` for the API, which passes through uncached).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the generated configuration needs.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// The origin (a Sluice gateway): `http://host:port` or `https://host:port`.
    pub origin: String,
    /// Where the edge listens: `host:port`.
    pub listen: String,
    /// The edge's cache, logs and temporary files (absolute).
    pub cache_dir: PathBuf,
    /// Largest size of the object cache on disk, in nginx's syntax (`10g`, `512m`).
    pub max_size: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    #[error("origin must be http://HOST:PORT or https://HOST:PORT, got {0:?}")]
    Origin(String),
    #[error("listen must be HOST:PORT, got {0:?}")]
    Listen(String),
    #[error("the cache directory must be an absolute path without spaces, quotes, ';' or braces")]
    CacheDir,
    #[error("max size must be a number with an optional k, m or g suffix, got {0:?}")]
    MaxSize(String),
}

/// A `host:port` fit to be written into nginx's configuration: no characters that could
/// end a directive or start a new one.
fn host_port(s: &str) -> Option<&str> {
    let (host, port) = s.rsplit_once(':')?;
    let port_ok = !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    (port_ok && host_ok).then_some(s)
}

fn safe_path(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    let ok = p.is_absolute()
        && !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b';' | b'{' | b'}' | b'"' | b'\'' | b'\\' | b'$')
        });
    ok.then(|| s.trim_end_matches('/').to_string())
}

fn size(s: &str) -> bool {
    let digits = s.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
    !digits.is_empty()
        && digits.len() <= 12
        && digits.bytes().all(|b| b.is_ascii_digit())
        && s.len() - digits.len() <= 1
}

/// Render the configuration. Run it with `nginx -c FILE`.
pub fn render(o: &EdgeOptions) -> Result<String, EdgeError> {
    let (scheme, rest) = o
        .origin
        .trim_end_matches('/')
        .split_once("://")
        .ok_or_else(|| EdgeError::Origin(o.origin.clone()))?;
    if !matches!(scheme, "http" | "https") {
        return Err(EdgeError::Origin(o.origin.clone()));
    }
    let origin = host_port(rest).ok_or_else(|| EdgeError::Origin(o.origin.clone()))?;
    let listen = host_port(&o.listen).ok_or_else(|| EdgeError::Listen(o.listen.clone()))?;
    let dir = safe_path(&o.cache_dir).ok_or(EdgeError::CacheDir)?;
    if !size(&o.max_size) {
        return Err(EdgeError::MaxSize(o.max_size.clone()));
    }
    let max_size = &o.max_size;
    let tls_upstream = if scheme == "https" {
        "\n        proxy_ssl_server_name on;\n        proxy_ssl_verify on;\n        proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;"
    } else {
        ""
    };
    let mut c = String::new();
    let _ = write!(
        c,
        r#"# A caching edge for Sluice, written by `sluice edge nginx`.
# Run: nginx -c THIS_FILE   (reload after changes: nginx -c THIS_FILE -s reload)
# Origin {scheme}://{origin}; cache, logs and temporary files under {dir}.

worker_processes auto;
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 16384;
}}

http {{
    access_log {dir}/access.log;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    server_tokens off;
    client_body_temp_path {dir}/body_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    open_file_cache max=10000 inactive=60s;

    # Playback objects, keyed without the token; and the origin's verdicts on tokens.
    proxy_cache_path {dir}/objects levels=1:2 keys_zone=sluice_objects:64m max_size={max_size} inactive=7d use_temp_path=off;
    proxy_cache_path {dir}/grants levels=1:2 keys_zone=sluice_grants:16m max_size=256m inactive=10m use_temp_path=off;

    upstream sluice_origin {{
        server {origin};
        keepalive 128;
    }}

    # The grant a playback URL carries: tenant, asset and token.
    map $request_uri $sluice_grant {{
        "~^/v1/play/(?<t>[^/?]+)/(?<a>[^/?]+)/(?<k>[^/?]+)/" "$t/$a/$k";
        default "";
    }}

    server {{
        listen {listen} backlog=8192;
        server_name _;
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;{tls_upstream}

        # Playback: token checked at the edge, object cached without it.
        location ~ ^/v1/play/([^/]+)/([^/]+)/[^/]+/(.+)$ {{
            set $sluice_object $1/$2/$3;
            auth_request /_sluice/verify;
            error_page 401 403 = @sluice_refused;
            proxy_cache sluice_objects;
            proxy_cache_key $sluice_object;
            proxy_cache_methods GET HEAD;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_lock_age 30s;
            proxy_cache_revalidate on;
            proxy_cache_background_update on;
            proxy_cache_use_stale updating error timeout http_500 http_502 http_503 http_504;
            proxy_ignore_headers Set-Cookie;
            proxy_pass {scheme}://sluice_origin;
            add_header X-Cache-Status $upstream_cache_status always;
        }}

        location = /_sluice/verify {{
            internal;
            proxy_pass {scheme}://sluice_origin/v1/edge/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_cache sluice_grants;
            proxy_cache_key "$sluice_grant|$remote_addr";
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
        }}

        location @sluice_refused {{
            default_type application/json;
            add_header Cache-Control "no-store" always;
            add_header X-Cache-Status REFUSED always;
            return 403 '{{"error":{{"code":"invalid_token","message":"the playback token is invalid, expired or not for this address"}}}}';
        }}

        # Purge one object (admin key): refetch it past both caches and replace the entry.
        location ~ ^/_sluice/purge/([^/]+)/([^/]+)/(.+)$ {{
            set $sluice_object $1/$2/$3;
            auth_request /_sluice/admin;
            proxy_cache sluice_objects;
            proxy_cache_key $sluice_object;
            proxy_cache_bypass 1;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            proxy_cache_valid any 1s;
            proxy_pass {scheme}://sluice_origin/v1/edge/objects/$sluice_object;
            add_header Cache-Control "no-store" always;
            add_header X-Cache-Status PURGED always;
        }}

        location = /_sluice/admin {{
            internal;
            proxy_pass {scheme}://sluice_origin/v1/edge/admin;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}

        # Everything else (the API, uploads, live pushes) passes through uncached and
        # unbuffered: tus PATCH bodies and encoder PUTs stream to the origin.
        location / {{
            proxy_pass {scheme}://sluice_origin;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            add_header X-Cache-Status BYPASS always;
        }}
    }}
}}
"#
    );
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> EdgeOptions {
        EdgeOptions {
            origin: "http://127.0.0.1:8080".into(),
            listen: "0.0.0.0:80".into(),
            cache_dir: "/var/cache/sluice-edge".into(),
            max_size: "10g".into(),
        }
    }

    #[test]
    fn the_cache_key_leaves_the_token_out_and_misses_collapse() {
        let c = render(&opts()).unwrap();
        assert!(c.contains("location ~ ^/v1/play/([^/]+)/([^/]+)/[^/]+/(.+)$ {"));
        assert!(c.contains("set $sluice_object $1/$2/$3;"));
        assert!(c.contains("proxy_cache_key $sluice_object;"));
        assert!(c.contains("proxy_cache_lock on;"));
        assert!(c.contains("auth_request /_sluice/verify;"));
        assert!(c.contains("proxy_cache_key \"$sluice_grant|$remote_addr\";"));
        assert!(c.contains("server 127.0.0.1:8080;"));
        assert!(c.contains("listen 0.0.0.0:80 backlog=8192;"));
        assert!(c.contains("pid /var/cache/sluice-edge/nginx.pid;"));
        assert!(c.contains("max_size=10g"));
        assert!(c.contains("add_header X-Cache-Status $upstream_cache_status always;"));
        // Braces balance: every block that opens closes.
        assert_eq!(c.matches('{').count(), c.matches('}').count());
        assert!(!c.contains("proxy_ssl"));
    }

    #[test]
    fn an_https_origin_is_verified() {
        let c = render(&EdgeOptions {
            origin: "https://origin.example.com:8443/".into(),
            ..opts()
        })
        .unwrap();
        assert!(c.contains("server origin.example.com:8443;"));
        assert!(c.contains("proxy_pass https://sluice_origin;"));
        assert!(c.contains("proxy_ssl_verify on;"));
    }

    #[test]
    fn nothing_can_be_smuggled_into_the_configuration() {
        for origin in [
            "127.0.0.1:8080",
            "ftp://h:1",
            "http://h",
            "http://h:0",
            "http://h:99999",
            "http://h;evil:80",
            "http://h:80; include /etc/passwd",
            "http://h}:80",
            "http://:80",
        ] {
            let r = render(&EdgeOptions {
                origin: origin.into(),
                ..opts()
            });
            assert!(matches!(r, Err(EdgeError::Origin(_))), "{origin}");
        }
        for listen in ["80", "h:", "h:x", "h :80", "h:80;"] {
            let r = render(&EdgeOptions {
                listen: listen.into(),
                ..opts()
            });
            assert!(matches!(r, Err(EdgeError::Listen(_))), "{listen}");
        }
        for dir in ["relative", "/a b", "/a;b", "/a{b", "/a$b", "/a'b"] {
            let r = render(&EdgeOptions {
                cache_dir: dir.into(),
                ..opts()
            });
            assert_eq!(r.unwrap_err(), EdgeError::CacheDir, "{dir}");
        }
        for size in ["", "g", "10gb", "1 0g", "10g;"] {
            let r = render(&EdgeOptions {
                max_size: size.into(),
                ..opts()
            });
            assert!(matches!(r, Err(EdgeError::MaxSize(_))), "{size}");
        }
    }
}
