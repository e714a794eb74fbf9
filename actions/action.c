/* The table of action kinds. */
#include "action.h"

#include <string.h>

static const struct action_type *const action_types[] = {
    &action_service_delete,
    &action_system_gc,
    &action_netns_clear,
    &action_client_restart,
    &action_server_restart,
    &action_node_ineligible,
};

const struct action_type *action_find(const char *name)
{
    for (size_t i = 0; i < sizeof(action_types) / sizeof(action_types[0]); i++) {
        if (strcmp(action_types[i]->name, name) == 0)
            return action_types[i];
    }
    return NULL;
}
