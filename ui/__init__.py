"""Static files of the LlamaMesh web UI (served by mesh.api.ui); installed as `mesh_ui`."""
