/*
 * stb_impl.c — the one translation unit that compiles stb_image (JPEG and PNG
 * only, decoding from memory: image.c reads the files itself so that its
 * errors can name them). Built with warnings off (see CMakeLists.txt).
 */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb_image.h>
