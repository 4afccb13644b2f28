/* Load generator for MIT Kerberos, driven by benches/ktc.rs (which compiles it with `cc -O2 ... -lkrb5 -lpthread`).
 *
 *   krb5_client as|tgs THREADS SECONDS KEYTAB CLIENT [SERVICE...]
 *
 * Each thread has its own krb5_context. `as`: AS exchanges in a loop, krb5_get_init_creds_keytab for CLIENT (a
 * keytab, so no password-to-key on the client). `tgs`: one AS exchange for a TGT into a private MEMORY cache, then
 * TGS exchanges in a loop, krb5_get_credentials with KRB5_GC_NO_STORE for the SERVICEs in turn, so no service ticket
 * is ever cached and every call is a round trip to the KDC. All threads start together (a barrier) and stop after
 * SECONDS. Prints one line: `mode threads ok failed seconds rate`. Exits 1 if any exchange failed. */
#include <krb5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *mode, *keytab_name, *client_name;
static char **services;
static int nservices;
static double seconds;
static pthread_barrier_t start;

struct result {
    long ok, failed;
    double elapsed;
    char error[256];
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void note(krb5_context ctx, krb5_error_code err, struct result *r, const char *what) {
    r->failed++;
    if (!r->error[0]) {
        const char *m = krb5_get_error_message(ctx, err);
        snprintf(r->error, sizeof r->error, "%s: %s", what, m);
        krb5_free_error_message(ctx, m);
    }
}

static void *worker(void *arg) {
    struct result *r = arg;
    krb5_context ctx;
    krb5_principal client;
    krb5_keytab kt;
    krb5_ccache cc = NULL;
    krb5_principal *svc = calloc(nservices ? nservices : 1, sizeof *svc);
    krb5_error_code err;
    int i, tgs = strcmp(mode, "tgs") == 0;

    if ((err = krb5_init_context(&ctx)) != 0) {
        snprintf(r->error, sizeof r->error, "krb5_init_context failed (%d)", err);
        r->failed++;
        pthread_barrier_wait(&start);
        return NULL;
    }
    if ((err = krb5_parse_name(ctx, client_name, &client)) != 0 || (err = krb5_kt_resolve(ctx, keytab_name, &kt)) != 0) {
        note(ctx, err, r, "client or keytab");
        pthread_barrier_wait(&start);
        return NULL;
    }
    for (i = 0; i < nservices; i++) {
        if ((err = krb5_parse_name(ctx, services[i], &svc[i])) != 0) {
            note(ctx, err, r, "service name");
            pthread_barrier_wait(&start);
            return NULL;
        }
    }
    if (tgs) {
        krb5_creds tgt;
        if ((err = krb5_get_init_creds_keytab(ctx, &tgt, client, kt, 0, NULL, NULL)) != 0 ||
            (err = krb5_cc_new_unique(ctx, "MEMORY", NULL, &cc)) != 0 ||
            (err = krb5_cc_initialize(ctx, cc, client)) != 0 || (err = krb5_cc_store_cred(ctx, cc, &tgt)) != 0) {
            note(ctx, err, r, "TGT");
            pthread_barrier_wait(&start);
            return NULL;
        }
        krb5_free_cred_contents(ctx, &tgt);
    }

    pthread_barrier_wait(&start);
    double t0 = now();
    for (i = 0;; i++) {
        if ((i & 15) == 0 && now() - t0 >= seconds)
            break;
        if (tgs) {
            krb5_creds in, *out = NULL;
            memset(&in, 0, sizeof in);
            in.client = client;
            in.server = svc[i % nservices];
            err = krb5_get_credentials(ctx, KRB5_GC_NO_STORE, cc, &in, &out);
            if (err == 0) {
                r->ok++;
                krb5_free_creds(ctx, out);
            } else {
                note(ctx, err, r, "TGS exchange");
            }
        } else {
            krb5_creds c;
            err = krb5_get_init_creds_keytab(ctx, &c, client, kt, 0, NULL, NULL);
            if (err == 0) {
                r->ok++;
                krb5_free_cred_contents(ctx, &c);
            } else {
                note(ctx, err, r, "AS exchange");
            }
        }
    }
    r->elapsed = now() - t0;
    if (cc)
        krb5_cc_destroy(ctx, cc);
    krb5_kt_close(ctx, kt);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 6 || (strcmp(argv[1], "as") && strcmp(argv[1], "tgs")) || (!strcmp(argv[1], "tgs") && argc < 7)) {
        fprintf(stderr, "usage: %s as|tgs THREADS SECONDS KEYTAB CLIENT [SERVICE...]\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    int threads = atoi(argv[2]);
    seconds = atof(argv[3]);
    keytab_name = argv[4];
    client_name = argv[5];
    services = argv + 6;
    nservices = argc - 6;
    if (threads < 1)
        threads = 1;

    pthread_t *t = calloc(threads, sizeof *t);
    struct result *r = calloc(threads, sizeof *r);
    pthread_barrier_init(&start, NULL, threads);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, &r[i]);
    long ok = 0, failed = 0;
    double elapsed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        ok += r[i].ok;
        failed += r[i].failed;
        if (r[i].elapsed > elapsed)
            elapsed = r[i].elapsed;
        if (r[i].error[0])
            fprintf(stderr, "thread %d: %s\n", i, r[i].error);
    }
    printf("%s %d %ld %ld %.6f %.1f\n", mode, threads, ok, failed, elapsed, elapsed > 0 ? ok / elapsed : 0.0);
    return failed ? 1 : 0;
}
