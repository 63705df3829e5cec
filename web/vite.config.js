// The dashboard is served by the daemon from web/dist; in development, `npx vite` proxies the API.
import { defineConfig } from 'vite';

export default defineConfig({
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  server: { proxy: { '/api': 'http://127.0.0.1:7070' } },
});
