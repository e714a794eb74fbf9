/* Nomad connection settings: defaults and the NOMAD_* environment variables. */
#define _POSIX_C_SOURCE 200809L
#include "nomad.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int set_string(char **field, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return -1;
    free(*field);
    *field = copy;
    return 0;
}

void nomad_conn_config_defaults(struct nomad_conn_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->address = strdup("http://127.0.0.1:4646");
    cfg->connect_timeout_ms = 5000;
    cfg->request_timeout_ms = 30000;
    cfg->max_retries = 3;
    cfg->retry_base_ms = 200;
    cfg->max_response_bytes = (size_t)64 * 1024 * 1024;
    cfg->max_connections = 8;
}

/* Go's strconv.ParseBool, which the official CLI uses for NOMAD_SKIP_VERIFY. */
static int parse_go_bool(const char *text, int *out)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

int nomad_conn_config_from_env(struct nomad_conn_config *cfg)
{
    static const struct {
        const char *name;
        size_t offset;
    } vars[] = {
        {"NOMAD_ADDR", offsetof(struct nomad_conn_config, address)},
        {"NOMAD_TOKEN", offsetof(struct nomad_conn_config, token)},
        {"NOMAD_REGION", offsetof(struct nomad_conn_config, region)},
        {"NOMAD_NAMESPACE", offsetof(struct nomad_conn_config, namespace_name)},
        {"NOMAD_CACERT", offsetof(struct nomad_conn_config, ca_cert)},
        {"NOMAD_CAPATH", offsetof(struct nomad_conn_config, ca_path)},
        {"NOMAD_CLIENT_CERT", offsetof(struct nomad_conn_config, client_cert)},
        {"NOMAD_CLIENT_KEY", offsetof(struct nomad_conn_config, client_key)},
        {"NOMAD_TLS_SERVER_NAME", offsetof(struct nomad_conn_config, tls_server_name)},
        {"NOMAD_HTTP_AUTH", offsetof(struct nomad_conn_config, http_auth)},
    };
    const char *skip;

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *value = getenv(vars[i].name);
        char **field = (char **)((char *)cfg + vars[i].offset);

        /* The CLI treats an empty variable as unset. */
        if (value == NULL || value[0] == '\0')
            continue;
        if (set_string(field, value) != 0)
            return -1;
    }

    skip = getenv("NOMAD_SKIP_VERIFY");
    if (skip != NULL && skip[0] != '\0') {
        int flag;

        if (parse_go_bool(skip, &flag) == 0)
            cfg->skip_verify = flag;
    }
    return 0;
}

void nomad_conn_config_free(struct nomad_conn_config *cfg)
{
    free(cfg->address);
    free(cfg->token);
    free(cfg->region);
    free(cfg->namespace_name);
    free(cfg->ca_cert);
    free(cfg->ca_path);
    free(cfg->client_cert);
    free(cfg->client_key);
    free(cfg->tls_server_name);
    free(cfg->http_auth);
    memset(cfg, 0, sizeof(*cfg));
}
