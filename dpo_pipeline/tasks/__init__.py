"""What is particular to each task the pipeline serves: its data, its reward, its evaluation prompts."""
