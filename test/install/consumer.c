/* Uses the installed headers and library: version, errors, embedded broker. */
#include <stdio.h>
#include <string.h>

#include <rill/rill.h>
#include <rill/testkit.h>

int main(void)
{
    if (strcmp(rill_version_str(), RILL_VERSION_STR) != 0) {
        fprintf(stderr, "header %s, library %s\n", RILL_VERSION_STR, rill_version_str());
        return 1;
    }
    char err[256];
    rill_broker_t *b = rill_broker_new(1, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "broker: %s\n", err);
        return 1;
    }
    int ok = rill_broker_create_topic(b, "installed", 1, 1, err, sizeof(err)) == RILL_OK;
    printf("rill %s: embedded broker at %s, %s\n", rill_version_str(), rill_broker_bootstraps(b),
           rill_err2str(RILL_EFULL));
    rill_broker_destroy(b);
    return ok ? 0 : 1;
}
