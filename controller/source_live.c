/*
 * The live source: reads go to the Nomad HTTP API through a nomad_client.
 */
#define _POSIX_C_SOURCE 200809L

#include "source.h"

#include <stdlib.h>
#include <time.h>

struct live_source {
    struct source base;         /* first, so a struct source * is a struct live_source * */
    struct nomad_client *client; /* borrowed: the caller frees it after the source */
};

static int live_get(struct source *src, const char *path, struct nomad_response *resp)
{
    struct live_source *live = (struct live_source *)src;

    return nomad_get(live->client, path, resp);
}

static int live_get_many(struct source *src, const char *const *paths, size_t n,
                         struct nomad_response *resps)
{
    struct live_source *live = (struct live_source *)src;

    return nomad_get_many(live->client, paths, n, resps);
}

static void live_destroy(struct source *src)
{
    free(src);
}

static const struct source_ops live_ops = {
    .name = "live",
    .get = live_get,
    .get_many = live_get_many,
    .destroy = live_destroy,
};

struct source *source_live_new(struct nomad_client *client, int per_page)
{
    struct live_source *live;

    if (client == NULL || per_page < 0)
        return NULL;
    live = calloc(1, sizeof(*live));
    if (live == NULL)
        return NULL;
    live->base.ops = &live_ops;
    live->base.per_page = per_page;
    live->base.observed_at = (long long)time(NULL);
    live->base.note = NULL;
    live->client = client;
    return &live->base;
}

const char *source_live_address(const struct source *src)
{
    const struct live_source *live = (const struct live_source *)src;

    if (src == NULL || src->ops != &live_ops)
        return NULL;
    return nomad_client_address(live->client);
}
