/* Exits at once: a short-lived process for the scale benchmark. */
int main(void) { return 0; }
