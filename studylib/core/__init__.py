"""The foundation every stage uses: languages, data, prompts, models, generation, metrics, efficiency, training, records, params."""
