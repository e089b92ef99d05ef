/* Uses the installed headers and library: version, errors, embedded
 * broker, and an LMDB state store (so lmdb is linked, also statically). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

    char dir[] = "/tmp/rill-install-store-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    rill_store_t *store = NULL;
    if (rill_store_open_lmdb(dir, NULL, &store, err, sizeof(err)) != RILL_OK) {
        fprintf(stderr, "store: %s\n", err);
        ok = 0;
    } else {
        int64_t offset;
        ok = ok && rill_store_offset(store, "installed", 0, &offset) == RILL_ENOENT;
        printf("store %s opened\n", rill_store_name(store));
        rill_store_close(store);
    }
    const char *files[] = {"data.mdb", "lock.mdb", "rill.lock"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[96];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return ok ? 0 : 1;
}
