/*
 * arena.h — bump allocator: one per model / workspace, freed all at once.
 *
 * Memory comes in chunks (64-byte aligned, zero-filled); lpv_arena_alloc never
 * moves earlier allocations, so pointers stay valid until lpv_arena_free. Size
 * the first chunk with what you know you need (llm.c's malloc_and_point style);
 * later allocations that do not fit open a new chunk. Not thread-safe: allocate
 * up front, never in hot loops.
 *
 *     lpv_arena a; lpv_arena_init(&a, 1 << 20);
 *     float *x = lpv_arena_alloc(&a, n * sizeof(float));  // NULL on OOM
 *     lpv_arena_free(&a);
 */
#ifndef LPVIT_ARENA_H
#define LPVIT_ARENA_H

#include <stddef.h>

typedef struct lpv_arena_chunk lpv_arena_chunk;

typedef struct {
    lpv_arena_chunk *head; /* most recent chunk */
    size_t chunk_size;     /* default size of a new chunk */
    size_t total;          /* bytes reserved in all chunks */
} lpv_arena;

void lpv_arena_init(lpv_arena *a, size_t chunk_size);
/* 64-byte aligned, zeroed; NULL when out of memory or on size overflow. */
void *lpv_arena_alloc(lpv_arena *a, size_t bytes);
/* Copies a NUL-terminated string into the arena. */
char *lpv_arena_strdup(lpv_arena *a, const char *s);
void lpv_arena_free(lpv_arena *a);

#endif
