/*
 * stb_impl.c — the one translation unit that compiles stb_image (PNG, and
 * JPEG only in a build without libjpeg-turbo; decoding from memory: image.c
 * reads the files itself so that its errors can name them). stb allocates
 * with malloc (no STBI_MALLOC here), so lpv_image_free can free() its pixels
 * like image_jpeg.c's. Built with warnings off (see CMakeLists.txt).
 */
#define STB_IMAGE_IMPLEMENTATION
#ifndef LPVIT_HAVE_LIBJPEG
#define STBI_ONLY_JPEG
#endif
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb_image.h>
